// The polled part of the page: the header (version, uptime, tasks by status), the Queues
// panel (which also fills the Type filter) and the Backends table, from the stats endpoints
// every few seconds. The first poll starts the event feed from the event id it reports.
import { $, el, setConn } from './dom.js';
import { AuthDismissed, apiJson } from './api.js';
import { streamLive, streamStarted, startStream } from './feed.js';
import { ago, formatDuration, hostOf, serverNow, setClockSkew } from './format.js';

const STATUSES = ['QUEUED', 'RUNNING', 'DONE', 'FAILED', 'CANCELED'];
const STATS_EVERY_MS = 3000;
const STATS_BACKOFF_MS = 10000;

const totals = {};
let statsTimer = null;
let uptimeBase = null;  // {uptime_s, at}: the uptime ticks locally between polls
const knownPools = new Set();

function renderTotals() {
  for (const li of $('totals').children) {
    const n = totals[li.dataset.status];
    li.querySelector('.n').textContent = n === undefined ? '–' : String(Math.max(0, n));
  }
}

function renderUptime() {
  if (!uptimeBase) return;
  const s = uptimeBase.uptime_s + (Date.now() - uptimeBase.at) / 1000;
  $('uptime').textContent = formatDuration(Math.floor(s));
}

function renderStats(stats) {
  $('version').textContent = stats.version || '?';
  const started = Date.parse(stats.started_at);
  if (!isNaN(started)) setClockSkew(started + stats.uptime_s * 1000 - Date.now());
  uptimeBase = { uptime_s: stats.uptime_s, at: Date.now() };
  $('uptime').title = `since ${stats.started_at}`;
  renderUptime();
  for (const s of STATUSES) totals[s] = (stats.totals && stats.totals[s]) || 0;
  renderTotals();
}

function sparkline(values) {
  const w = 150;
  const h = 36;
  const pad = 2;
  const vals = Array.isArray(values) && values.length ? values : [0];
  const max = Math.max(1, ...vals);
  const step = vals.length > 1 ? (w - 2 * pad) / (vals.length - 1) : 0;
  const pts = vals.map((v, i) => [pad + i * step, h - pad - (v / max) * (h - 2 * pad)]);
  const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  const area = `${pad},${h - pad} ${line} ${(pad + (vals.length - 1) * step).toFixed(1)},${h - pad}`;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const label = `Completed per minute over the last ${vals.length} minutes, oldest first: ` +
    vals.join(', ');
  svg.setAttribute('aria-label', label);
  const title = document.createElementNS(ns, 'title');
  title.textContent = label;
  const fill = document.createElementNS(ns, 'polygon');
  fill.setAttribute('points', area);
  fill.setAttribute('class', 'spark-area');
  const poly = document.createElementNS(ns, 'polyline');
  poly.setAttribute('points', line);
  poly.setAttribute('class', 'spark-line');
  svg.append(title, fill, poly);
  return svg;
}

function renderQueues(queues, workers) {
  const byPool = new Map((workers || []).map((w) => [w.pool, w]));
  const box = $('queues');
  box.replaceChildren();
  for (const q of queues) {
    const w = byPool.get(q.pool) || {};
    const stat = (label, value, cls) => el('div', { class: `stat ${cls || ''}` },
      el('dt', null, label), el('dd', null, value));
    const downBackends = w.backends !== undefined && w.backends_up < w.backends;
    box.append(el('article', { class: 'queue', 'data-pool': q.pool },
      el('h3', null, q.pool),
      el('dl', { class: 'stats' },
        stat('queued', String(q.depth)),
        stat('running', String(q.running)),
        stat('oldest queued', formatDuration(q.oldest_queued_age_s),
          q.oldest_queued_age_s > 60 ? 'warn' : ''),
        stat('done last min', String(q.completed_last_minute)),
        stat('workers busy', w.workers !== undefined ? `${w.busy} / ${w.workers}` : '–'),
        stat('backends up', w.backends !== undefined ? `${w.backends_up} / ${w.backends}` : '–',
          downBackends ? 'bad' : '')),
      el('figure', { class: 'spark-box' },
        sparkline(q.throughput_per_minute),
        el('figcaption', { class: 'muted' }, 'done per minute, last 15 min'))));
    if (!knownPools.has(q.pool)) {
      knownPools.add(q.pool);
      $('filter-type').append(el('option', { value: q.pool }, q.pool));
    }
  }
  if (!queues.length) box.append(el('p', { class: 'muted' }, 'No pools.'));
}

// A table cell that turns into a labelled line on a phone (see style.css).
function cell(label, ...children) {
  return el('td', { 'data-label': label }, el('div', { class: 'cell' }, ...children));
}

function renderBackends(backends) {
  const body = $('backends');
  body.replaceChildren();
  for (const b of backends) {
    const out = b.state === 'down' || b.state === 'ejected';
    const lat = b.latency_ms || {};
    const latText = b.successes || lat.mean ? `${Math.round(lat.mean)} / ${Math.round(lat.p95)} ms` : '–';
    const slots = el('span', { class: 'slots' },
      el('meter', { min: 0, max: b.slots || 1, value: b.slots_busy, 'aria-hidden': 'true' }),
      ` ${b.slots_busy} / ${b.slots}`);
    const failures = `${b.failures}` + (b.client_errors ? ` (+${b.client_errors} 4xx)` : '') +
      (b.ejections ? `, ${b.ejections} ejection${b.ejections === 1 ? '' : 's'}` : '');
    body.append(el('tr', {
      class: out ? 'backend-out' : (b.state === 'busy' ? 'backend-busy' : ''),
      'data-url': b.url, 'data-state': b.state, 'data-pool': b.pool,
    },
    cell('Backend',
      el('span', { class: 'pool-tag' }, b.pool), ' ', el('span', { class: 'url', title: b.url }, hostOf(b.url))),
    cell('State',
      el('span', { class: `badge state-${b.state}` }, out ? b.state.toUpperCase() : b.state),
      el('span', { class: 'since muted', title: b.since }, ` for ${formatDuration((serverNow() - Date.parse(b.since)) / 1000)}`)),
    cell('Slots', slots),
    cell('Latency', latText),
    cell('OK / failed', `${b.successes} / ${failures}`),
    cell('Last error',
      b.last_error ? el('span', { title: b.last_error }, b.last_error) : '–',
      b.last_error_at ? el('span', { class: 'muted' }, ` (${ago(b.last_error_at)})`) : null)));
  }
  if (!backends.length) {
    body.append(el('tr', null, el('td', { colspan: 6, class: 'muted' }, 'No backends.')));
  }
}

let statsInFlight = false;
let lastStatsAt = 0;  // when the last poll started
let nextStatsAt = 0;  // when the next is due

// Task events change the counters: fetch them soon rather than at the next tick, but at
// most once a second however many events arrive.
function nudgeStats() {
  if (statsInFlight || !statsTimer) return;
  const soon = Math.max(Date.now() + 300, lastStatsAt + 1000);
  if (soon >= nextStatsAt) return;
  clearTimeout(statsTimer);
  nextStatsAt = soon;
  statsTimer = setTimeout(pollStats, soon - Date.now());
}

export async function pollStats() {
  clearTimeout(statsTimer);
  statsTimer = null;
  if (document.hidden || statsInFlight) return;  // resumed on visibilitychange
  statsInFlight = true;
  lastStatsAt = Date.now();
  let next = STATS_EVERY_MS;
  try {
    const [stats, queues, workers, backends] = await Promise.all([
      apiJson('/api/v1/stats'), apiJson('/api/v1/stats/queues'),
      apiJson('/api/v1/stats/workers'), apiJson('/api/v1/backends'),
    ]);
    renderStats(stats);
    renderQueues(queues.queues || [], workers.workers || []);
    renderBackends(backends.backends || []);
    if (!streamStarted()) startStream(stats.last_event_id);
  } catch (err) {
    if (err instanceof AuthDismissed) {
      statsInFlight = false;
      return;
    }
    next = STATS_BACKOFF_MS;
    if (!streamLive()) setConn('down', 'server unreachable');
  }
  statsInFlight = false;
  if (!document.hidden && !statsTimer) {
    nextStatsAt = Date.now() + next;
    statsTimer = setTimeout(pollStats, next);
  }
}

// A task event moves one task between the header's counters.
export function countEvent(ev) {
  if (ev.previous_status && totals[ev.previous_status] !== undefined) totals[ev.previous_status]--;
  if (ev.status && totals[ev.status] !== undefined && ev.previous_status !== ev.status) {
    if (ev.previous_status || ev.status === 'QUEUED') totals[ev.status]++;
  }
  renderTotals();
  nudgeStats();
}

export function wireStats() {
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !statsTimer) pollStats();
  });
  setInterval(renderUptime, 1000);
}
