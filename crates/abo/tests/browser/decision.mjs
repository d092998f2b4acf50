// A decision from a notification's link, in headless Chromium: the link (to one option of an
// agent's question) opens the login form, which brings the person back to it; opening it changed
// nothing (the approval still waits); the page shows the option chosen and one button that
// confirms it, a POST with the session's CSRF token; the answer is taken. Run by
// tests/it/notify_decide.rs.
import { chromium } from 'playwright-core';

const url = process.env.ABO_URL;
const link = process.env.ABO_LINK;
const token = process.env.ABO_TOKEN;

async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function pending() {
  const r = await fetch(`${url}/v1/approvals`, { headers: { authorization: `Bearer ${token}` } });
  return (await r.json()).length;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const page = await browser.newPage();
const violations = [];
page.on('console', (m) => { if (/Content Security Policy/.test(m.text())) violations.push(m.text()); });
await page.goto(link);
// Not logged in: the form, which comes back here.
await page.fill('input[name=token]', token);
await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
if (page.url() !== link.replace(/#.*$/, '') && page.url() !== link) {
  throw new Error(`after logging in, at ${page.url()}, not ${link}`);
}
// Following the link twice changed nothing: the approval waits.
await page.goto(link);
if ((await pending()) !== 1) throw new Error('opening the link decided something');
const chosen = await page.textContent('#decide .chosen');
if (!/You chose option 2: Viewer/.test(chosen)) throw new Error(`the page shows: ${chosen}`);
await page.click('#decide button.confirm');
await until('the answer taken', async () => (await page.textContent('#result')) === 'done');
await until('the approval gone', async () => (await pending()) === 0);
if (violations.length) throw new Error(`CSP violations: ${violations.join('; ')}`);
await browser.close();
console.log('decision: ok');
