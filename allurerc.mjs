import { defineConfig } from "allure";

export default defineConfig({
  name: "Kubernetes on CoreOS: conformance",
  output: "./reports/allure-report",
  // JSONL history carried across runs, so trends show from one run to the next
  historyPath: "./reports/history.jsonl",
  plugins: {
    awesome: { options: { singleFile: false, reportLanguage: "en", groupBy: ["epic", "feature", "story"] } },
  },
});
