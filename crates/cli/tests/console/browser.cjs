// Browser checks of the Apogee console, run by crates/cli/tests/console.rs against a console
// it started: Debian's chromium driven by playwright-core (never a downloaded browser).
// Usage: node browser.cjs <console url> <screenshot dir>; env CONSOLE_GROUP, CONSOLE_TOPICS
// (comma-separated), CONSOLE_KEY, and optionally CHROMIUM (default /usr/bin/chromium).
"use strict";

const path = require("path");
const { chromium } = require("playwright-core");

const [url, shots] = process.argv.slice(2);
const group = process.env.CONSOLE_GROUP;
const topics = process.env.CONSOLE_TOPICS.split(",");
const key = process.env.CONSOLE_KEY;
const TIMEOUT = 30000;

function step(name) {
  console.log(`browser: ${name}`);
}

async function textIs(page, selector, expected) {
  await page.waitForFunction(
    ([sel, want]) => {
      const e = document.querySelector(sel);
      return e && e.textContent.trim() === want;
    },
    [selector, expected],
    { timeout: TIMEOUT },
  );
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Offline: the page may load nothing but the console's own files.
  const origin = new URL(url).origin;
  await page.route("**/*", (route) =>
    route.request().url().startsWith(origin) ? route.continue() : route.abort());

  try {
    step("topics listed");
    await page.goto(`${url}/#/topics`);
    for (const t of topics) await page.waitForSelector(`#topics tr[data-topic="${t}"]`);
    await page.click(`#topics tr[data-topic="${topics[1]}"]`);
    await page.waitForSelector("#topic-queues tbody tr");
    await page.screenshot({ path: path.join(shots, "topics.png"), fullPage: true });

    step("group lag 0, one retry, one dead letter");
    await page.goto(`${url}/#/groups/${group}`);
    await page.waitForSelector(`#groups tr[data-group="${group}"]`);
    await textIs(page, "#group-lag", "0");
    await textIs(page, "#group-retry", "1");
    await textIs(page, "#group-dlq", "1");
    await page.screenshot({ path: path.join(shots, "group.png"), fullPage: true });

    step("message found by key, with its retry history");
    await page.goto(`${url}/#/messages`);
    await page.fill("#by-key input[name=topic]", topics[0]);
    await page.fill("#by-key input[name=key]", key);
    await page.click("#by-key button");
    await page.waitForSelector("#key-results tbody tr");
    if ((await page.locator("#key-results tbody tr").count()) !== 1) throw new Error("expected one message by key");
    await page.click("#key-results tbody tr");
    await page.waitForSelector("#message-detail");
    await page.waitForFunction(() => document.querySelectorAll("#retry-history tbody tr").length === 2,
      null, { timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, "message.png"), fullPage: true });

    step("dead letter re-sent");
    await page.goto(`${url}/#/dlq/${group}`);
    await page.waitForSelector("#dlq tbody tr");
    await page.click("#dlq tbody tr button.resend");
    await page.waitForFunction(() => document.getElementById("dlq-notice").textContent.startsWith("Re-sent"),
      null, { timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, "dlq.png"), fullPage: true });

    step("overview with charts");
    await page.goto(`${url}/#/overview`);
    await page.waitForSelector("#brokers tbody tr td.role");
    await page.waitForFunction(() => document.querySelectorAll("#tps-chart polyline").length === 2,
      null, { timeout: TIMEOUT });
    await textIs(page, "#brokers tbody tr td.role", "master");
    await page.screenshot({ path: path.join(shots, "overview.png"), fullPage: true });

    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    step("all checks passed");
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`browser check failed: ${e.stack || e}`);
  process.exit(1);
});
