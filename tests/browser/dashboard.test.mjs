// Browser test of the dashboard against a running `taskserver demo` (started by
// scripts/test_browser.sh). Drives Debian's chromium through playwright-core.
//
//   DASHBOARD_URL   base URL of the demo (required), e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN the demo's --api-token: the run then checks the token prompt instead
//   SCREENSHOT_DIR  where screenshots go (default: ./screenshots)
//   CHROMIUM        the browser (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = (process.env.DASHBOARD_URL || '').replace(/\/$/, '');
const TOKEN = process.env.DASHBOARD_TOKEN || '';
const SHOTS = process.env.SCREENSHOT_DIR || 'screenshots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TAG = TOKEN ? 'token-' : '';
if (!BASE) throw new Error('set DASHBOARD_URL to the base URL of a running taskserver demo');
mkdirSync(SHOTS, { recursive: true });

let browser;
let page;
const consoleErrors = [];
let listRequests = 0;
let doneImageTaskId = null;  // the task of the form test, shown again in a later picture

// The API from the test itself (to set up situations and to check what the page shows).
async function api(pathname, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const res = await fetch(BASE + pathname, { ...options, headers, signal: AbortSignal.timeout(10000) });
  const body = await res.json();
  if (!res.ok) throw new Error(`${options.method || 'GET'} ${pathname}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

function submitTask(prompt, priority) {
  return api('/api/v1/tasks', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ type: 'image', payload: { prompt }, priority }),
  });
}

const shot = (name, options = {}) =>
  page.screenshot({ path: path.join(SHOTS, `${TAG}${name}.png`), ...options });

const row = (id) => page.locator(`#tasks tr[data-task-id="${id}"]`);

async function waitRowStatus(id, status, timeout) {
  await page.waitForSelector(`#tasks tr[data-task-id="${id}"][data-status="${status}"]`, { timeout });
}

// With a token the browser logs the first (expected) 401s as failed resource loads.
function unexpectedConsoleErrors() {
  return consoleErrors.filter((m) => !(TOKEN && /status of 401/.test(m)));
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-first-run'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/api/v1/tasks' && r.method() === 'GET') listRequests++;
  });
});

after(async () => {
  if (browser) await browser.close();
});

test('the dashboard loads and shows the server', { timeout: 60000 }, async () => {
  const resp = await page.goto(`${BASE}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  if (TOKEN) {
    await page.waitForSelector('#token-dialog[open]', { timeout: 15000 });
    await shot('token-prompt');
    // Dismissed, the page says what it needs and offers the prompt again.
    await page.click('#token-cancel');
    await page.waitForSelector('#conn[data-state="auth"]', { timeout: 15000 });
    await page.click('#token-button');
    await page.waitForSelector('#token-dialog[open]', { timeout: 15000 });
    await page.fill('#token-input', 'not-the-token');
    await page.press('#token-input', 'Enter');
    await page.waitForFunction(
      () => document.querySelector('#token-dialog').open &&
        /refused/.test(document.querySelector('#token-reason').textContent),
      null, { timeout: 15000 });
    await page.fill('#token-input', TOKEN);
    await page.press('#token-input', 'Enter');
    await page.waitForSelector('#token-dialog', { state: 'hidden', timeout: 15000 });
  }
  const stats = await api('/api/v1/stats');
  const { backends } = await api('/api/v1/backends');
  await page.waitForFunction((v) => document.querySelector('#version').textContent === v,
    stats.version, { timeout: 15000 });
  await page.waitForFunction((n) => document.querySelectorAll('#backends tr[data-state]').length === n,
    backends.length, { timeout: 15000 });
  await page.waitForSelector('#queues article[data-pool="image"] svg.spark', { timeout: 15000 });
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
  const uptime = await page.textContent('#uptime');
  assert.match(uptime, /\d/);
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('a prompt submitted through the form runs to DONE and its image renders', { timeout: 90000 }, async () => {
  const prompt = `a red fox in the snow ${Date.now()}`;
  await page.fill('#prompt', prompt);
  await page.selectOption('#priority', '8');
  await page.click('#submit-button');
  // The new task appears at once (from the submit's answer, not from a later refresh).
  const newRow = page.locator('#tasks tr', { hasText: prompt });
  await newRow.waitFor({ timeout: 5000 });
  const id = await newRow.getAttribute('data-task-id');
  assert.ok(id, 'the row names its task');
  const task = await api(`/api/v1/tasks/${id}`);
  assert.equal(task.priority, 8);
  assert.deepEqual(task.payload, { prompt });
  // Only the event stream moves the row on: the list is not polled.
  await waitRowStatus(id, 'DONE', 60000);
  doneImageTaskId = id;
  await row(id).locator('button[data-open]').click();
  await page.waitForSelector('#detail[data-status="DONE"]', { timeout: 15000 });
  await page.waitForFunction(() => {
    const img = document.querySelector('#result-image');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 20000 });
  const src = await page.getAttribute('#result-image', 'src');
  assert.match(src, /^blob:/, 'the image is fetched with the token header and shown from a blob');
  assert.equal(await page.locator('#detail .attempts-table tbody tr').count(), 1);
  const json = JSON.parse(await page.textContent('#detail details.json pre'));
  assert.equal(json.task_id, id);
  assert.equal(json.status, 'DONE');
  await page.waitForTimeout(300);  // let the row highlight fade in the picture (not an assertion)
  await shot('dashboard');
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('the token stays for the tab: a reload does not ask again', { skip: !TOKEN, timeout: 60000 }, async () => {
  await page.reload({ waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
  assert.equal(await page.locator('#token-dialog[open]').count(), 0);
  await page.waitForSelector('#tasks tr[data-task-id]', { timeout: 15000 });
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('a queued task is canceled from its details; filter and paging work', { skip: !!TOKEN, timeout: 90000 }, async () => {
  // Ten tasks for three one-slot backends keep the queue busy; the target has the lowest
  // priority so it is the last to start.
  const fillers = [];
  for (let i = 0; i < 10; i++) fillers.push(await submitTask(`filler ${i}`, 5));
  const target = await submitTask(`to be canceled ${Date.now()}`, 0);
  // Tasks submitted elsewhere reach the table through the event stream.
  await row(target.task_id).waitFor({ timeout: 15000 });
  await waitRowStatus(target.task_id, 'QUEUED', 5000);
  await row(target.task_id).locator('button[data-open]').click();
  await page.waitForSelector('#detail[data-status="QUEUED"] #cancel-button', { timeout: 15000 });
  await page.click('#cancel-button');
  await waitRowStatus(target.task_id, 'CANCELED', 15000);
  await page.waitForSelector('#detail[data-status="CANCELED"]', { timeout: 15000 });
  assert.equal(await page.locator('#cancel-button').count(), 0, 'no cancel button on a final task');
  assert.equal((await api(`/api/v1/tasks/${target.task_id}`)).status, 'CANCELED');
  await shot('canceled');

  // Status filter.
  await page.selectOption('#filter-status', 'CANCELED');
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll('#tasks tr[data-task-id]')];
    return rows.length > 0 && rows.every((r) => r.dataset.status === 'CANCELED') &&
      rows.some((r) => r.dataset.taskId === id);
  }, target.task_id, { timeout: 15000 });
  await page.selectOption('#filter-status', '');
  await row(fillers[0].task_id).waitFor({ timeout: 15000 });

  // Retried from its details: the canceled task is queued again, the retry counted.
  await page.waitForSelector('#detail[data-status="CANCELED"] #retry-button', { timeout: 15000 });
  await page.click('#retry-button');
  await page.waitForFunction((id) => {
    const r = document.querySelector(`#tasks tr[data-task-id="${id}"]`);
    return r && r.dataset.status !== 'CANCELED';
  }, target.task_id, { timeout: 15000 });
  const retried = await api(`/api/v1/tasks/${target.task_id}`);
  assert.equal(retried.retries, 1);
  assert.notEqual(retried.status, 'CANCELED');
  assert.equal(await page.locator('#retry-button').count(), 0, 'no retry button once it is queued again');

  // Paging with the API's cursor: 12 tasks, 10 a page.
  await page.selectOption('#page-size', '10');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tr[data-task-id]').length === 10 &&
    !document.querySelector('#older').disabled, null, { timeout: 15000 });
  const ids = () => page.$$eval('#tasks tr[data-task-id]', (rows) => rows.map((r) => r.dataset.taskId));
  const first = await ids();
  await page.click('#older');
  await page.waitForFunction(() => document.querySelector('#page-label').textContent === 'page 2', null,
    { timeout: 15000 });
  await page.waitForFunction((firstIds) => {
    const rows = [...document.querySelectorAll('#tasks tr[data-task-id]')];
    return rows.length > 0 && rows.every((r) => !firstIds.includes(r.dataset.taskId));
  }, first, { timeout: 15000 });
  const second = await ids();
  const expected = (await api('/api/v1/tasks?limit=100')).tasks.map((t) => t.task_id);
  assert.deepEqual([...first, ...second], expected.slice(0, first.length + second.length),
    'two pages follow each other, newest first');
  await page.click('#newer');
  await page.waitForFunction(() => document.querySelector('#page-label').textContent === 'page 1' &&
    document.querySelector('#newer').disabled, null, { timeout: 15000 });
  await page.selectOption('#page-size', '25');
  await row(target.task_id).waitFor({ timeout: 15000 });
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('a backend whose health fails is marked down, and comes back', { skip: !!TOKEN, timeout: 90000 }, async () => {
  const { backends } = await api('/api/v1/backends');
  const victim = backends.find((b) => b.pool === 'image');
  assert.ok(victim, 'the demo has image backends');
  const flip = async (ok) => {
    const res = await fetch(`${victim.url}/admin/health?ok=${ok}`, {
      method: 'POST', signal: AbortSignal.timeout(10000),
    });
    assert.equal(res.status, 200);
  };
  // Tasks in flight and an image beside the down backend make the README's picture.
  for (let i = 0; i < 4; i++) await submitTask(`a lighthouse at dusk, take ${i + 1}`, 5);
  if (doneImageTaskId && (await row(doneImageTaskId).count())) {
    await row(doneImageTaskId).locator('button[data-open]').click();
    await page.waitForFunction(() => (document.querySelector('#result-image') || {}).naturalWidth > 0,
      null, { timeout: 20000 });
  }
  await flip(false);
  try {
    const down = `#backends tr[data-url="${victim.url}"][data-state="down"]`;
    await page.waitForSelector(down, { timeout: 45000 });
    assert.match(await page.getAttribute(down, 'class'), /backend-out/);
    assert.equal((await page.textContent(`${down} .badge`)).trim(), 'DOWN');
    await page.waitForSelector('#queues article[data-pool="image"] .stat.bad', { timeout: 15000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('backend-down');
  } finally {
    await flip(true);
  }
  await page.waitForSelector(`#backends tr[data-url="${victim.url}"][data-state="up"]`, { timeout: 45000 });
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('keyboard: a skip link, visible focus, real buttons', { skip: !!TOKEN, timeout: 30000 }, async () => {
  // A fresh load, so sequential focus starts at the top of the page.
  await page.reload({ waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#tasks tr[data-task-id]', { timeout: 15000 });
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => ({
    cls: document.activeElement.className,
    outline: getComputedStyle(document.activeElement).outlineStyle,
  }));
  assert.equal(first.cls, 'skip');
  assert.notEqual(first.outline, 'none', 'focus is visible');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'prompt');
  // Every task in the table opens from a real button.
  const buttons = await page.$$eval('#tasks tr[data-task-id] td.id > *', (els) => els.map((e) => e.tagName));
  assert.ok(buttons.length > 0 && buttons.every((t) => t === 'BUTTON'));
});

test('a phone-sized screen shows the dashboard without sideways scrolling', { skip: !!TOKEN, timeout: 30000 }, async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  if (doneImageTaskId && (await row(doneImageTaskId).count())) {
    await row(doneImageTaskId).locator('button[data-open]').click();
    await page.waitForSelector('#detail[data-status="DONE"]', { timeout: 15000 });
    await page.click('#detail details.json summary');
  }
  await page.waitForFunction(() => document.documentElement.scrollWidth <= 390, null, { timeout: 10000 });
  for (const sel of ['#totals', '#queues', '#backends', '#tasks', '#submit-button']) {
    assert.ok(await page.locator(sel).isVisible(), `${sel} is visible`);
  }
  await shot('phone', { fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
  assert.deepEqual(unexpectedConsoleErrors(), []);
});

test('no console errors, and the task list was not polled', { timeout: 10000 }, async () => {
  assert.deepEqual(unexpectedConsoleErrors(), []);
  console.log(`# GET /api/v1/tasks (list) requests during the run: ${listRequests}`);
  assert.ok(listRequests <= 40, `the task list was fetched ${listRequests} times`);
});
