// Time to first render of dashboard pages in headless Chromium, for `abo bench --only dashboard`:
// each page of ABO_PAGES (space-separated paths) opened ABO_REPS times in a fresh tab with the
// session cookie; per page the median navigation-to-first-contentful-paint and to the load event,
// in ms, printed as one JSON object. Nothing is asserted: it is a measurement.
import { chromium } from 'playwright-core';

const url = process.env.ABO_URL;
const token = process.env.ABO_TOKEN;
const pages = (process.env.ABO_PAGES || '/').split(' ').filter(Boolean);
const reps = Number(process.env.ABO_REPS || '5');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const ctx = await browser.newContext();
const host = new URL(url).hostname;
await ctx.addCookies([{ name: 'abo_session', value: token, domain: host, path: '/' }]);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = {};
for (const path of pages) {
  const fcp = [], load = [];
  for (let i = 0; i < reps; i++) {
    const page = await ctx.newPage();
    await page.goto(url + path, { waitUntil: 'load' });
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      return { fcp: paint ? paint.startTime : -1, load: nav ? nav.loadEventEnd : -1 };
    });
    fcp.push(t.fcp);
    load.push(t.load);
    await page.close();
  }
  out[path] = { fcp_ms: median(fcp), load_ms: median(load) };
}
await browser.close();
console.log(JSON.stringify(out));
