// Renders Adaptive Cards with the real adaptivecards renderer in the system's headless Chromium.
// Usage: node render.mjs <jobs.json>   (jobs.json: {"chromium", "width", "jobs": [{"name", "card", "png"}]})
// Prints one JSON object: {"results": {<name>: {issues, text, actions, anchors, pageErrors, png}}}.
// The page gets no network at all: every card resource is inlined, so a render can never fetch.
import { chromium } from "playwright-core";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const acDist = dirname(require.resolve("adaptivecards/package.json")) + "/dist";

const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
const width = spec.width || 540;
const hostConfig = JSON.parse(await readFile(join(here, "hostconfig.json"), "utf8"));
const acScript = await readFile(join(acDist, "adaptivecards.min.js"), "utf8");
const acCss = await readFile(join(acDist, "adaptivecards.css"), "utf8");
const pageScript = await readFile(join(here, "page.js"), "utf8");

// A fresh profile per run: nothing from an earlier render (or a person's browser) leaks in.
const profile = await mkdtemp(join(tmpdir(), "card-render-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: spec.chromium,
  headless: true,
  chromiumSandbox: false,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: width + 32, height: 900 },
  deviceScaleFactor: 1,
  offline: true,
});
const results = {};
try {
  await context.route("**/*", (route) => route.abort());
  const page = context.pages()[0] || (await context.newPage());
  let pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("console", (msg) => { if (msg.type() === "error") pageErrors.push(msg.text()); });
  await page.setContent(
    `<!doctype html><html><head><meta charset="utf-8"><style>` +
    `body{margin:0;padding:16px;background:#EBEBEB;font-family:'Segoe UI','DejaVu Sans',sans-serif}` +
    `#root{width:${width}px;background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.2);overflow:hidden}` +
    `.ac-pushButton{border:1px solid #D1D1D1;border-radius:4px;background:#fff;color:#242424;` +
    `padding:5px 12px;font:600 14px 'Segoe UI','DejaVu Sans',sans-serif}` +
    `</style></head><body><div id="root"></div></body></html>`);
  await page.addStyleTag({ content: acCss });
  await page.addScriptTag({ content: acScript });
  await page.addScriptTag({ content: pageScript });
  for (const job of spec.jobs) {
    pageErrors = [];
    const out = await page.evaluate(([card, hc]) => window.renderCard(card, hc), [job.card, hostConfig]);
    if (job.png) {
      await page.locator("#root").screenshot({ path: job.png });
    }
    results[job.name] = { ...out, pageErrors, png: job.png || null };
  }
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ results }));
