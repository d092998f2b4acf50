// The dashboard in headless Chromium: log in, watch a task change state without reloading,
// approve a waiting task with a reason and see it land, all under the server's
// Content-Security-Policy with no violation. Then the red team's attacks, each with its control:
// a page on another port of 127.0.0.1 (same site, so the SameSite=Strict cookie goes along)
// auto-submits a form killing a run, and frames the dashboard; an inline script injected into a
// page does not run. Run by tests/it/browser.rs.
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const url = process.env.ABO_URL;
const token = process.env.ABO_TOKEN;
const adminToken = process.env.ABO_ADMIN;
const run = process.env.ABO_RUN;
const victim = process.env.ABO_VICTIM;

/// Polls `check` until it holds, for at most `ms`.
async function until(what, check, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function runStatus(id) {
  const r = await fetch(`${url}/v1/runs/${id}`, { headers: { authorization: `Bearer ${adminToken}` } });
  return (await r.json()).run.status;
}

// The attacker: another port of the same host.
const attacker = createServer((req, res) => {
  res.setHeader('content-type', 'text/html');
  if (req.url === '/kill') {
    res.end(`<form method=post action="${url}/v1/runs/${victim}/kill"><input type=hidden name=confirm value=yes></form><script>document.forms[0].submit()</script>`);
  } else if (req.url === '/frame') {
    res.end(`<iframe id=theirs src="/plain"></iframe><iframe id=dashboard src="${url}/runs/${victim}"></iframe>`);
  } else {
    res.end('<main>framed fine</main>');
  }
});
await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
const evil = `http://127.0.0.1:${attacker.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

/// A logged-in page of its own context, recording every Content-Security-Policy violation.
async function session(secret, viewport) {
  const context = await browser.newContext({ viewport });
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
  await page.fill('input[name=token]', secret);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:has-text("At a glance")');
  return { page, violations };
}

try {
  const { page, violations } = await session(token, { width: 390, height: 844 }); // a phone
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
  await page.goto(`${url}/runs/${run}/tasks/slow`);
  await page.waitForSelector('h2:has-text("Change")');
  await page.goto(`${url}/summary`);
  await page.waitForSelector('h1:has-text("Coming home")');
  if (violations.length) throw new Error(`the dashboard broke its own policy: ${violations.join('; ')}`);

  // An inline script injected into a page (what an XSS would do) does not run, and is reported.
  await page.goto(`${url}/runs/${run}`);
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__injected = true;';
    document.body.appendChild(s);
  });
  await until('the violation report', () => violations.some((v) => v.startsWith('script-src')));
  if (await page.evaluate(() => window.__injected === true)) throw new Error('an inline script ran');

  // CSRF: the admin's browser visits the attacker's page, which auto-submits a kill.
  const admin = await session(adminToken);
  const answer = admin.page.waitForResponse((r) => r.url() === `${url}/v1/runs/${victim}/kill`);
  await admin.page.goto(`${evil}/kill`);
  const refused = await answer;
  const body = await refused.text();
  // 403 `csrf`, not 401: the cookie went along, and the CSRF check refused it.
  if (refused.status() !== 403 || !body.includes('"csrf"')) throw new Error(`the forged kill: ${refused.status()} ${body}`);
  const after = await runStatus(victim);
  if (after === 'killed') throw new Error('the forged form killed the run');
  // The control: the dashboard's own Kill button, in the same browser, kills it.
  await admin.page.goto(`${url}/runs/${victim}`);
  await admin.page.click('button:has-text("Kill")');
  await admin.page.waitForSelector('#result:has-text("done")', { timeout: 10000 });
  await until('the run killed', async () => (await runStatus(victim)) === 'killed');
  if (admin.violations.length) throw new Error(`policy violations: ${admin.violations.join('; ')}`);

  // Framing: the attacker's own page renders in its frame (the control), the dashboard does not.
  await admin.page.goto(`${evil}/frame`);
  const theirs = await (await admin.page.waitForSelector('#theirs')).contentFrame();
  await theirs.waitForSelector('main:has-text("framed fine")');
  const framed = await (await admin.page.waitForSelector('#dashboard')).contentFrame();
  await until('the dashboard frame blocked', () => framed.url().startsWith('chrome-error:'));
  if (await framed.$('main')) throw new Error('the dashboard rendered in a frame of another origin');
  console.log(`browser: ok (${violations.length} injected script refused; forged kill ${refused.status()}; ${victim} killed by its button)`);
} finally {
  await browser.close();
  attacker.close();
}
