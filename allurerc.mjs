// Allure Report 3 configuration, used by scripts/report (run from the repository root).
// Paths follow $K8SCONF_REPORTS like the suite does (helpers/paths.py): reports/ by default.
import { resolve } from "node:path";
import { defineConfig } from "allure";

const reports = resolve(process.env.K8SCONF_REPORTS || "./reports");

export default defineConfig({
  name: "Kubernetes on CoreOS: conformance",
  output: `${reports}/allure-report`,
  // JSONL history, one line per generated report, carried across runs: trends and
  // per-test history show from the second run on
  historyPath: `${reports}/history.jsonl`,
  plugins: {
    // The awesome plugin's options (node_modules/@allurereport/plugin-awesome/dist/model.d.ts).
    // singleFile: false writes index.html plus data/ files fetched at run time, so the
    // report needs an HTTP server (`python3 -m http.server -d reports/allure-report`);
    // file:// does not load it.
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
