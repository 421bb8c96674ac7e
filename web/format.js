// How values are shown: durations and ages (on the server's clock), times, ids, hosts, a
// task's prompt and its status badge.
import { el } from './dom.js';

// Server time minus browser time, from /api/v1/stats (stats.js sets it), so ages are right
// on a skewed clock.
let clockSkewMs = 0;
export const serverNow = () => Date.now() + clockSkewMs;
export function setClockSkew(ms) {
  clockSkewMs = ms;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '–';
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function ago(iso) {
  if (!iso) return '–';
  const t = Date.parse(iso);
  if (isNaN(t)) return iso;
  return `${formatDuration((serverNow() - t) / 1000)} ago`;
}

export function timeCell(iso) {
  return el('time', { datetime: iso || '', title: iso || '' }, ago(iso));
}

// A wall-clock time (local), for tables whose rows are not re-rendered every second.
export function clockCell(iso) {
  const t = Date.parse(iso);
  const text = isNaN(t) ? (iso || '–') : new Date(t).toLocaleTimeString([], { hour12: false });
  return el('time', { datetime: iso || '', title: iso || '' }, text);
}

export const shortId = (id) => (id && id.length > 10 ? `…${id.slice(-8)}` : id || '');
export const hostOf = (url) => {
  try {
    return new URL(url).host;
  } catch {
    return url || '';
  }
};

export function promptOf(task) {
  const p = task && task.payload;
  if (!p || typeof p !== 'object') return '';
  if (typeof p.prompt === 'string') return p.prompt;
  if (task.input && task.input.filename) return task.input.filename;
  return '';
}

export function statusBadge(status) {
  return el('span', { class: `badge status-${String(status).toLowerCase()}`, 'data-status': status },
    status);
}
