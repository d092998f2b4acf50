// The dashboard as a person uses it, in headless Chromium: the home page at a glance (counts,
// today's cost against the daily cap with its alert), the live transcript of a stub agent
// appearing while it streams, an approval decided on the home page, Pause all pausing every run
// and Kill all killing them; at desktop and 390-px phone widths, with no horizontal scrolling on
// the phone and no Content-Security-Policy violation. Screenshots go to $ABO_SHOTS.
// Run by tests/it/home.rs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.ABO_URL;
const admin = process.env.ABO_ADMIN;
const run = process.env.ABO_RUN;
const waits = [process.env.ABO_WAIT_A, process.env.ABO_WAIT_B];
const shots = process.env.ABO_SHOTS;

async function until(what, check, ms = 30000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function api(path) {
  const r = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${admin}` } });
  return r.json();
}
const runStatus = async (id) => (await api(`/v1/runs/${id}`)).run.status;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

async function session(viewport) {
  const context = await browser.newContext({ viewport, timezoneId: 'Europe/Paris' });
  const violations = [];
  await context.exposeFunction('__cspViolation', (v) => violations.push(v));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolation(`${e.violatedDirective} ${e.blockedURI} at ${location.href}`);
    });
  });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  await page.goto(`${url}/`);
  await page.fill('input[name=token]', admin);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:has-text("At a glance")');
  return { page, violations };
}

const count = (page, k) => page.locator(`[data-count=${k}] b`).innerText();
const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

/// A phone shows the page without scrolling sideways.
async function fits(page, what) {
  const [w, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (w > inner) throw new Error(`${what} scrolls sideways on a phone: ${w}px wide in ${inner}px`);
}

try {
  const { page, violations } = await session({ width: 1280, height: 900 });

  // At a glance: the agent and both waiting runs are running (the other agent asked a question).
  await until('three running', async () => (await count(page, 'running')) === '3');
  const today = page.locator('.spend[data-window="today"]');
  if (!(await today.innerText()).includes('of $2.00')) throw new Error(`today's bar: ${await today.innerText()}`);
  // Times in the viewer's zone, with their age.
  const created = await page.locator(`tr[data-run="${run}"] time`).innerText();
  if (!/\(just now\)|min ago/.test(created)) throw new Error(`created: ${created}`);

  // The agent's task page: its transcript streams in while the page stays the same document.
  await page.goto(`${url}/runs/${run}/tasks/live`);
  await page.evaluate(() => { window.__same = true; });
  await page.waitForSelector('#transcript .line:has-text("Reading the repository.")', { timeout: 30000 });
  await page.waitForSelector('#transcript .line:has-text("▸ Bash: ls -la")');
  const clock = await page.locator('.clock').innerText();
  if (!/^elapsed .* of 30m 00s/.test(clock)) throw new Error(`the attempt's clock: ${clock}`);
  const held = await page.locator('.held').innerText();
  if (!held.includes('$0.50')) throw new Error(`its reservation: ${held}`);
  writeFileSync(process.env.ABO_GO, 'go'); // the agent says one more line
  await page.waitForSelector('#transcript .line:has-text("Writing live.txt now.")', { timeout: 30000 });
  if (!(await page.evaluate(() => window.__same === true))) throw new Error('the task page reloaded');
  await shot(page, 'task-live-desktop');
  writeFileSync(process.env.ABO_GO2, 'go'); // and finishes
  await page.waitForSelector('.task-status .s-landed', { timeout: 30000 });
  await page.waitForSelector('details.file[data-file="live.txt"] tr.add');

  // Home again: the cost charged (60 cents of two dollars) is past the 25% alert, and it says so.
  await page.goto(`${url}/`);
  await until('today at 30%', async () => (await today.getAttribute('data-pct')) === '30');
  if (!(await today.locator('svg.bar.alert').count())) throw new Error('no alert on the bar');
  await page.waitForSelector('.alerts li[data-alert="daily.usd"]', { timeout: 10000 });
  if ((await count(page, 'landed')) !== '1') throw new Error(`landed today: ${await count(page, 'landed')}`);

  // The agent's question waits on the home page with its options: the person picks one, and the
  // task's next attempt runs with the answer and lands.
  await until('two waiting', async () => (await count(page, 'waiting')) === '2');
  const decision = page.locator('.decision[data-approval*="/ask/"]');
  if (!(await decision.locator('.question').innerText()).includes('Which roles first?')) throw new Error('no question on the card');
  await shot(page, 'decision-desktop');
  await decision.locator('button[data-choose="2"]').click();
  await page.waitForSelector('#result:has-text("done")', { timeout: 10000 });
  await until('two landed today', async () => (await count(page, 'landed')) === '2');

  // The manifest change waits for a person: approved on the home page itself.
  await until('one waiting', async () => (await count(page, 'waiting')) === '1');
  const card = page.locator('[data-approval*="manifest"]');
  await card.locator('textarea').fill('the manifest is fine');
  await card.locator('button:has-text("Approve")').click();
  await page.waitForSelector('#result:has-text("done")', { timeout: 10000 });
  await until('three landed today', async () => (await count(page, 'landed')) === '3');
  await shot(page, 'home-desktop');

  // Pause all: every running run pauses.
  await page.click('button:has-text("Pause all")');
  await until('both runs paused', async () =>
    (await Promise.all(waits.map(runStatus))).every((s) => s === 'paused'));
  for (const w of waits) await page.waitForSelector(`tr[data-run="${w}"] .s-paused`, { timeout: 10000 });

  // A phone: each page without sideways scrolling.
  const phone = await session({ width: 390, height: 844 });
  await fits(phone.page, 'the home page');
  await shot(phone.page, 'home-phone');
  await phone.page.goto(`${url}/runs/${run}/tasks/live`);
  await phone.page.waitForSelector('h2:has-text("Change")');
  // Once the attempt is over, its transcript as kept.
  await phone.page.waitForSelector('#transcript .line:has-text("■ result: Wrote live.txt.")');
  await fits(phone.page, 'the task page');
  await shot(phone.page, 'task-phone');
  await phone.page.goto(`${url}/summary`);
  await phone.page.waitForSelector('h1:has-text("Coming home")');
  const item = await phone.page.locator('[data-item$="/live"] .figures').innerText();
  if (!/^\$0\.60 · 1 attempt · /.test(item)) throw new Error(`the summary's figures: ${item}`);
  await fits(phone.page, 'the summary');
  await shot(phone.page, 'summary-phone');
  await phone.page.goto(`${url}/runs/${run}`);
  await fits(phone.page, 'the run page');
  await shot(phone.page, 'run-phone');

  // Kill all, from the phone: both paused runs end killed.
  await phone.page.goto(`${url}/`);
  await phone.page.click('button:has-text("Kill all")');
  await until('both runs killed', async () =>
    (await Promise.all(waits.map(runStatus))).every((s) => s === 'killed'));

  const all = violations.concat(phone.violations);
  if (all.length) throw new Error(`the dashboard broke its own policy: ${all.join('; ')}`);
  console.log('home: ok');
} finally {
  await browser.close();
}
