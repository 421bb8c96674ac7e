// The taskserver dashboard's entry module (index.html loads it; plain ES modules, no library,
// no build step). It wires the panels together: what a live task event changes on the page,
// what a lost event stream reloads, and the order things start in. The parts:
//   dom.js     element helpers, the connection indicator
//   format.js  durations, times, ids, badges
//   api.js     fetch with the bearer token, the token dialog
//   stats.js   header totals, queues, backends (polled every few seconds)
//   feed.js    the SSE event feed (GET /api/v1/events)
//   tasks.js   submit form, filters, pager, task table
//   detail.js  a task's details, its image, cancel
// The task list is fetched only on load, on a filter or page change, and when the event feed
// says something changed that the page cannot work out by itself.
import { askFirstIfNeeded, wireTokenDialog } from './api.js';
import { loadDetail, scheduleDetail, wireDetail } from './detail.js';
import { setFeedHandlers, startStream, streamStarted } from './feed.js';
import { countEvent, pollStats, wireStats } from './stats.js';
import {
  loadPage, matchesFilters, onFirstPage, scheduleRefresh, updateRow, view, wireTasks,
} from './tasks.js';

function applyEvent(ev) {
  if (!ev || !ev.task_id) return;
  countEvent(ev);

  const t = view.byId.get(ev.task_id);
  if (t) {
    t.status = ev.status;
    t.attempt = ev.attempt;
    if (ev.backend) t.backend = ev.backend;
    if (ev.error) t.error = ev.error;
    if (ev.status === 'DONE' && !t.result_url) {
      t.result_url = t.type === 'image' ? `/api/images/${t.task_id}` : `/api/v1/tasks/${t.task_id}/result`;
    }
    updateRow(t);
    if (!matchesFilters(t)) scheduleRefresh();
  } else if (matchesFilters({ status: ev.status, type: ev.type })) {
    scheduleRefresh();
  }
  if (ev.task_id === view.selectedId) scheduleDetail();
}

function onReset() {
  // Events were lost: what the page shows may be stale.
  scheduleRefresh();
  if (!onFirstPage()) loadPage();
  if (view.selectedId) scheduleDetail();
  pollStats();
}

function init() {
  wireTasks();
  wireDetail();
  wireTokenDialog(() => {
    // Anything that stopped for want of a token starts again with it.
    loadPage();
    pollStats();
    if (!streamStarted()) startStream();  // from the last event seen, if any
    if (view.selectedId) loadDetail(view.selectedId);
  });
  wireStats();
  setFeedHandlers(applyEvent, onReset);

  // The stats first: they give the event id to stream from, so the list fetched after it
  // misses nothing (a change in between is both in the list and replayed, applied twice
  // harmlessly).
  askFirstIfNeeded().then(pollStats).then(loadPage);
}

init();
