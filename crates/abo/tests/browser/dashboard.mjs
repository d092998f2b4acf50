// The dashboard in headless Chromium: log in, watch a task change state without reloading,
// approve a waiting task with a reason and see it land. Run by tests/it/browser.rs.
import { writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const url = process.env.ABO_URL;
const token = process.env.ABO_TOKEN;
const run = process.env.ABO_RUN;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  await page.goto(`${url}/`);
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:has-text("Runs")');
  await page.goto(`${url}/runs/${run}`);
  await page.evaluate(() => { window.__sameDocument = true; });
  // The slow task goes from running to landed while the page stays the same document.
  await page.waitForSelector('tr[data-task="slow"] .s-running', { timeout: 30000 });
  writeFileSync(process.env.ABO_GO, 'go'); // lets the slow task finish
  await page.waitForSelector('tr[data-task="slow"] .s-landed', { timeout: 30000 });
  await page.waitForSelector('g[data-task="slow"][data-status="landed"]');
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error('the page reloaded');
  // The manifest change waits for a person: approve it with a reason.
  await page.goto(`${url}/approvals`);
  const card = page.locator('[data-approval*="manifest"]');
  await card.waitFor({ timeout: 30000 });
  await card.locator('textarea').fill('the new dependency is vetted');
  await card.locator('button:has-text("Approve")').click();
  await page.waitForSelector('#result:has-text("done")', { timeout: 10000 });
  await page.goto(`${url}/runs/${run}`);
  await page.waitForSelector('tr[data-task="manifest"] .s-landed', { timeout: 30000 });
  console.log('browser: ok');
} finally {
  await browser.close();
}
