// Drives Debian's chromium through playwright-core for tests/test_browser.py and `mtz-mobile bench --runtime web`.
//
//   node mtz_mobile/web/drive.mjs JOB.json      (prints one JSON document on stdout)
//
// JOB {"kind": "pages", "pages": [{"url", "steps": [{"task": KEY, "sample": I} | {"task": KEY, "upload": PATH}]}]}
//   opens every page at once, each in its own context, waits until body[data-state] leaves "loading", then per step
//   selects the task and/or picks the image exactly as a user would and reads #result back; reports
//   the state, the #error text, the selector's options, every step's outputs, navigations, the page's
//   model compilations, uncaught page errors and console errors.
// JOB {"kind": "bench", "url", "sets": ["zipped", "separate"], "trials", "runs", "warmup"}
//   per trial and set a fresh browser on /bench.html (see static/bench.js); adds the renderers' RSS
//   (VmRSS from /proc, Linux; every renderer process summed: the other ones are idle, so the differences
//   between the steps are the page's) before loading, after loading and after running every task.
import {readFileSync} from 'node:fs';
import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.MTZ_CHROMIUM || '/usr/bin/chromium';
export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                      '--disable-component-update', '--disable-sync'];
const TIMEOUT_MS = Number(process.env.MTZ_DRIVE_TIMEOUT_MS || 20000);   // per wait

function launch() {
  return chromium.launch({executablePath: CHROMIUM, headless: true, args: FLAGS, timeout: TIMEOUT_MS});
}

function watch(page) {
  const seen = {pageErrors: [], consoleErrors: [], navigations: 0};
  page.on('pageerror', (e) => seen.pageErrors.push(String(e && e.stack || e)));
  page.on('console', (m) => { if (m.type() === 'error') seen.consoleErrors.push(m.text()); });
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) seen.navigations += 1; });
  return seen;
}

const runCount = (page) => page.$eval('#result', (r) => Number(r.dataset.run));

async function step(page, s) {
  const before = await runCount(page);
  const shown = before > 0;
  let expected = 0;
  if (s.task !== undefined && s.task !== await page.inputValue('#task')) {
    await page.selectOption('#task', s.task);
    expected += shown ? 1 : 0;
  }
  if (s.sample !== undefined) {
    await page.click(`.sample[data-index="${s.sample}"]`);
    expected += 1;
  } else if (s.upload !== undefined) {
    await page.setInputFiles('#upload', s.upload);
    expected += 1;
  }
  await page.waitForFunction(([prev, n]) => Number(document.querySelector('#result').dataset.run) >= prev + n
                               || document.body.dataset.state === 'error', [before, expected], {timeout: TIMEOUT_MS});
  return page.evaluate(() => {
    const r = document.querySelector('#result');
    return {signature: r.dataset.signature, ran: r.dataset.ran || null, run: Number(r.dataset.run), outputs: JSON.parse(r.dataset.outputs || 'null'),
            latency: (document.querySelector('#latency') || {}).textContent || null,
            top: Object.fromEntries([...r.querySelectorAll('.task-result')].map(
              (b) => [b.dataset.task, b.querySelector('td').textContent])),
            topShare: Object.fromEntries([...r.querySelectorAll('.task-result')].map(
              (b) => [b.dataset.task, b.querySelector('td:nth-child(2)').textContent])),
            state: document.body.dataset.state};
  });
}

async function openPage(browser, job) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  await page.goto(job.url, {timeout: TIMEOUT_MS});
  const steps = [];
  try {
    // a page that never leaves "loading" is reported as such, with whatever errors it raised
    await page.waitForFunction(() => document.body.dataset.state !== 'loading', null, {timeout: TIMEOUT_MS});
    if (await page.evaluate(() => document.body.dataset.state) === 'ready') {
      for (const s of job.steps || []) steps.push(await step(page, s));
    }
  } catch (e) {
    seen.driverError = String(e && e.message || e).split('\n')[0];
  }
  const report = await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.querySelector('#error').hidden ? null : document.querySelector('#error').textContent,
    options: [...document.querySelectorAll('#task option')].map((o) => o.value),
    loads: Number(document.body.dataset.loads || 0),
  }));
  await context.close();
  return {...report, steps, ...seen};
}

async function pages(job) {
  const browser = await launch();
  try {
    return {pages: await Promise.all(job.pages.map((p) => openPage(browser, p)))};
  } finally {
    await browser.close();
  }
}

async function rendererRss(cdp) {
  const {processInfo} = await cdp.send('SystemInfo.getProcessInfo');
  const renderers = processInfo.filter((p) => p.type === 'renderer');
  let total = 0;
  for (const p of renderers) {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p.id}/status`, 'utf8'));
    total += m ? Number(m[1]) * 1024 : 0;
  }
  return {bytes: total, processes: renderers.length};
}

async function benchOnce(job, set) {
  const browser = await launch();
  try {
    const cdp = await browser.newBrowserCDPSession();
    const page = await browser.newPage();
    const seen = watch(page);
    await page.goto(new URL('bench.html', job.url).href, {timeout: TIMEOUT_MS});
    await page.waitForFunction(() => window.mtzBench !== undefined, null, {timeout: TIMEOUT_MS});
    const r = {set, ...await page.evaluate(() => window.mtzBench.init())};
    r.rss_before = await rendererRss(cdp);
    Object.assign(r, await page.evaluate((s) => window.mtzBench.load(s), set));
    r.rss_after_load = await rendererRss(cdp);
    Object.assign(r, await page.evaluate(() => window.mtzBench.runEveryTask()));
    r.rss_after_run = await rendererRss(cdp);
    r.latency = await page.evaluate(([runs, warmup]) => window.mtzBench.latency(runs, warmup), [job.runs, job.warmup]);
    return {...r, ...seen};
  } finally {
    await browser.close();
  }
}

async function bench(job) {
  const trials = [];
  for (let t = 0; t < job.trials; t++) {
    // alternate which set goes first, so drift on a shared machine falls on both
    const order = t % 2 ? [...job.sets].reverse() : job.sets;
    for (const set of order) trials.push({trial: t, ...await benchOnce(job, set)});
  }
  return {trials};
}

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const run = {pages, bench}[job.kind];
if (!run) throw new Error(`unknown job kind ${job.kind}`);
process.stdout.write(JSON.stringify(await run(job)) + '\n');
