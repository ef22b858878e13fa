// Opens a URL in the system's headless Chromium (playwright-core, no browser download), optionally
// clicks a button by its visible name, and prints what the page showed as JSON:
// {"status", "text", "dialogs", "scripts", "pageErrors", "after": {"status", "text"}}.
// Usage: node click.mjs <chromium> <url> [button name] [screenshot.png]
// PAGE_FILL='{"Label": "text"}' fills those labelled fields before the click (the stop's reason).
import { chromium } from "playwright-core";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [chromiumPath, url, button, png] = process.argv.slice(2);
const profile = await mkdtemp(join(tmpdir(), "page-click-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: chromiumPath, headless: true, chromiumSandbox: false,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
  viewport: { width: 1000, height: 900 },
});
const out = { dialogs: [], pageErrors: [] };
try {
  const page = context.pages()[0] || (await context.newPage());
  // A hostile value that ran as script would open a dialog or raise here.
  page.on("dialog", async (d) => { out.dialogs.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => out.pageErrors.push(String(e)));
  const resp = await page.goto(url);
  out.status = resp.status();
  out.text = await page.innerText("body");
  out.scripts = await page.locator("script").count();
  if (png) await page.screenshot({ path: png, fullPage: true });
  for (const [label, value] of Object.entries(JSON.parse(process.env.PAGE_FILL || "{}"))) {
    await page.getByLabel(label).fill(value);
  }
  if (button) {
    const [nav] = await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: button }).click()]);
    out.after = { status: nav ? nav.status() : null, text: await page.innerText("body") };
  }
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(out));
