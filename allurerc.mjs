// Allure Report 3 configuration, used by scripts/report (run from the repository root).
// Paths follow $K8SCONF_REPORTS like the suite does (helpers/paths.py): reports/ by default.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { defineConfig } from "allure";

const reports = resolve(process.env.K8SCONF_REPORTS || "./reports");

// Allure 3's awesome report ignores categories.json in the results (only its allure2 and
// classic plugins read it); it takes categories from this config. So the suite's
// categories (helpers/reporting.py CATEGORIES, written to allure-results/categories.json)
// are read here and turned into Allure 3 matchers. Their regexes are Allure 2's: Java
// syntax, matched against the whole message; a leading inline flag group such as (?s)
// becomes a JavaScript flag (Node 20 rejects inline flags).
function pythonRegex(pattern) {
  const inline = /^\(\?([imsux]+)\)/.exec(pattern);
  const flags = inline ? [...inline[1]].filter((f) => "ims".includes(f)).join("") : "";
  return new RegExp(`^(?:${inline ? pattern.slice(inline[0].length) : pattern})$`, flags);
}

function suiteCategories(file) {
  let rules;
  try {
    rules = JSON.parse(readFileSync(file, "utf-8"));
  } catch {
    return undefined; // no results yet: Allure's default categories
  }
  return rules.map((rule) => {
    const matcher = {};
    if (rule.matchedStatuses?.length) matcher.statuses = rule.matchedStatuses;
    if (rule.messageRegex) matcher.message = pythonRegex(rule.messageRegex);
    if (rule.traceRegex) matcher.trace = pythonRegex(rule.traceRegex);
    return { name: rule.name, matchers: matcher, expand: true };
  });
}

export default defineConfig({
  name: "Kubernetes on CoreOS: conformance",
  output: `${reports}/allure-report`,
  // JSONL history, one line (~1 KB per test) per generated report, carried across runs:
  // trends and per-test history show from the second report on. The awesome report
  // charts the last few; 20 keeps the file bounded.
  historyPath: `${reports}/history.jsonl`,
  historyLimit: 20,
  categories: suiteCategories(`${reports}/allure-results/categories.json`),
  plugins: {
    // The awesome plugin's options (node_modules/@allurereport/plugin-awesome/dist/model.d.ts):
    // reportName, singleFile, logo, theme, reportLanguage, groupBy, layout, environments,
    // ci, filter, charts, timeline, sections, defaultSection, publish, appendTitlePath,
    // stepTreeExpansion, defaultSortBy.
    // singleFile: false writes index.html plus data/ and widgets/ files the page fetches,
    // so the report is served over HTTP (`python3 -m http.server -d reports/allure-report`);
    // file:// does not load it. singleFile: true inlines everything (one large file).
    awesome: {
      options: {
        reportName: "Kubernetes on CoreOS: conformance",
        singleFile: false,
        reportLanguage: "en",
        groupBy: ["epic", "feature", "story"],
      },
    },
  },
});
