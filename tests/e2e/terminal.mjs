// End-to-end run of the ccass terminal in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; never `npx playwright install`). Started by
// tests/it/terminal_e2e.rs, which owns the stack (Postgres, nats, slapd, auth, intake,
// terminal) and passes everything in E2E_CONFIG (JSON):
//   { url, reference, settlementDate, screenshots, users: { maker, checker, operator } }
// each user { certPath, keyPath, password }. Exit code 0 = every step passed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const config = JSON.parse(process.env.E2E_CONFIG);
const origin = new URL(config.url).origin;
mkdirSync(config.screenshots, { recursive: true });
let shot = 0;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function screenshot(page, name) {
  shot += 1;
  const path = join(config.screenshots, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
}

async function session(browser, user) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // our CA is not in Chromium's store; the client side is what is tested
    clientCertificates: [{ origin, certPath: user.certPath, keyPath: user.keyPath }],
  });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  return { context, page };
}

async function login(page, user, name) {
  await page.goto(`${config.url}/login`);
  await page.waitForSelector("#certificate-user");
  await page.fill("#password", user.password);
  await screenshot(page, `${name}-login`);
  await page.keyboard.press("Enter"); // keyboard only
  await page.waitForSelector("#who");
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  // 1. The maker logs in with certificate and password and inputs a DVP delivery.
  const maker = await session(browser, config.users.maker);
  await login(maker.page, config.users.maker, "maker");
  await maker.page.click("#nav-si-new");
  await maker.page.fill("#reference", config.reference);
  await maker.page.fill("#account", "B01234-01");
  await maker.page.fill("#counterparty", "B05678");
  await maker.page.fill("#counterparty_account", "B05678-02");
  await maker.page.fill("#quantity", "4000");
  await maker.page.fill("#settlement_date", config.settlementDate);
  await maker.page.fill("#currency", "HKD");
  await maker.page.fill("#amount", "100000.00");
  // Validation as you type: a wrong check digit is reported before submit.
  await maker.page.locator("#isin").pressSequentially("GB0005405287");
  await maker.page.waitForFunction(() => document.querySelector("#err-isin").textContent.includes("check digit"));
  await screenshot(maker.page, "maker-validation-as-you-type");
  await maker.page.fill("#isin", "GB0005405286");
  await maker.page.waitForFunction(() => document.querySelector("#err-isin").textContent === "");
  await maker.page.click("#submit-si");
  await maker.page.waitForSelector("#created");
  await screenshot(maker.page, "maker-input-pending");

  // 2. Authorising one's own input is refused with its code.
  const row = maker.page.locator(`tr[data-reference="${config.reference}"]`);
  await row.locator("button.authorise").click();
  const refusal = maker.page.locator('[data-code="self_authorisation"]');
  await refusal.waitFor();
  check((await refusal.textContent()).includes("different user"), "self-authorisation message");
  await screenshot(maker.page, "maker-self-authorisation-refused");

  // 3. A second user authorises; the SI goes to intake and matches the PSS's instruction.
  const checker = await session(browser, config.users.checker);
  await login(checker.page, config.users.checker, "checker");
  await checker.page.click("#nav-pending");
  await checker.page.locator(`tr[data-reference="${config.reference}"] button.authorise`).click();
  await checker.page.waitForURL(/\/si\?reference=/);
  await screenshot(checker.page, "checker-authorised");

  // 4. The maker watches the SI page: matched, then settled after the run, without reloading.
  await maker.page.goto(`${config.url}/si`);
  const link = maker.page.locator("a.si-link", { hasText: config.reference });
  for (let attempt = 0; attempt < 50 && (await link.count()) === 0; attempt += 1) {
    await maker.page.waitForTimeout(200);
    await maker.page.reload();
  }
  await link.click();
  const status = maker.page.locator("#si-status");
  await maker.page.waitForFunction(() => document.querySelector("#si-status").textContent.startsWith("matched"));
  await screenshot(maker.page, "maker-si-matched");
  const loads = [];
  maker.page.on("load", () => loads.push(Date.now()));

  const operator = await session(browser, config.users.operator);
  await login(operator.page, config.users.operator, "operator");
  await operator.page.click("#nav-ops-runs");
  await operator.page.fill("#run-date", config.settlementDate);
  await operator.page.click("#run-now");
  await operator.page.waitForSelector("#run-report");
  const report = await operator.page.locator("#run-report").textContent();
  check(report.includes("1 settled"), `run report: ${report}`);
  await screenshot(operator.page, "operator-run-with-chart");

  await maker.page.waitForFunction(() => document.querySelector("#si-status").textContent.startsWith("settled"));
  check(loads.length === 0, "the SI page was reloaded");
  check((await status.textContent()).startsWith("settled"), "settled shown live");
  await screenshot(maker.page, "maker-si-settled-live");

  // 5. Logout ends the session.
  await maker.page.click("#logout");
  await maker.page.waitForURL(/\/login$/);
  await maker.page.goto(`${config.url}/si`);
  check((await maker.page.locator('[data-code="not_logged_in"]').count()) === 1, "logged out");
  console.log("e2e: ok");
} finally {
  await browser.close();
}
