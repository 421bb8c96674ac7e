// The taskserver dashboard: header totals, queues, backends, a live task table and a task's
// details. Plain JS, no library. Live task changes come from GET /api/v1/events (read with
// fetch so it can carry the Authorization header); the stats endpoints are polled every few
// seconds; the task list is fetched only on load, on a filter or page change, and when the
// event stream says something changed that the page cannot work out by itself.
import { $, el } from './dom.js';
import { AuthDismissed, api, apiJson, askFirstIfNeeded, errorText, wireTokenDialog } from './api.js';
import { setFeedHandlers, startStream, streamStarted } from './feed.js';
import { clockCell, hostOf, promptOf, shortId, statusBadge, timeCell } from './format.js';
import { countEvent, pollStats, wireStats } from './stats.js';

// ---------------------------------------------------------------------------------------
// The task table.

const view = {
  tasks: [],              // the rows shown, newest first
  byId: new Map(),        // task_id -> task, for the rows shown
  cursors: [null],        // cursor of each page visited; the last is the current page's
  nextCursor: null,
  refreshTimer: null,
};
let selectedId = null;

const filters = () => ({
  status: $('filter-status').value,
  type: $('filter-type').value,
  limit: Number($('page-size').value) || 25,
});
const onFirstPage = () => view.cursors.length === 1;

function matchesFilters(task) {
  const f = filters();
  return (!f.status || task.status === f.status) && (!f.type || task.type === f.type);
}

async function loadPage() {
  const f = filters();
  const q = new URLSearchParams({ limit: String(f.limit) });
  if (f.status) q.set('status', f.status);
  if (f.type) q.set('type', f.type);
  const cursor = view.cursors[view.cursors.length - 1];
  if (cursor) q.set('cursor', cursor);
  const seq = (view.loadSeq = (view.loadSeq || 0) + 1);
  try {
    const page = await apiJson(`/api/v1/tasks?${q}`);
    if (seq !== view.loadSeq) return;  // a newer load superseded this one
    view.tasks = page.tasks || [];
    view.byId = new Map(view.tasks.map((t) => [t.task_id, t]));
    view.nextCursor = page.next_cursor || null;
    renderTasks();
  } catch (err) {
    if (!(err instanceof AuthDismissed)) $('page-label').textContent = `cannot load: ${err.message}`;
  }
}

// Coalesces the reasons to reload the first page (unknown tasks in the event stream) into
// at most one request per half second.
function scheduleRefresh() {
  if (!onFirstPage() || view.refreshTimer) return;
  view.refreshTimer = setTimeout(() => {
    view.refreshTimer = null;
    loadPage();
  }, 500);
}

function taskRow(t) {
  const tr = el('tr', { 'data-task-id': t.task_id });
  fillRow(tr, t);
  return tr;
}

// Fills a row; a row that exists keeps its cells (and so the focus of its button).
function fillRow(tr, t) {
  tr.dataset.status = t.status;
  tr.classList.toggle('selected', t.task_id === selectedId);
  const prompt = promptOf(t);
  if (!tr.firstChild) {
    tr.append(
      el('td', { class: 'id' },
        el('button', {
          type: 'button', class: 'link', 'data-open': t.task_id, title: t.task_id,
          'aria-label': `Show task ${t.task_id}`,
        }, shortId(t.task_id))),
      el('td', { class: 'status' }),
      el('td', { class: 'opt type' }),
      el('td', { class: 'opt num priority' }),
      el('td', { class: 'opt num attempt' }),
      el('td', { class: 'prompt' }),
      el('td', { class: 'opt created' }));
  }
  const cell = (cls) => tr.querySelector(`td.${cls}`);
  const status = cell('status');
  if (!status.firstChild || status.firstChild.dataset.status !== t.status) {
    status.replaceChildren(statusBadge(t.status));
  }
  cell('type').textContent = t.type;
  cell('priority').textContent = String(t.priority);
  cell('attempt').textContent = `${t.attempt}/${t.max_attempts}`;
  const p = cell('prompt');
  p.title = prompt;
  if (prompt) p.textContent = prompt;
  else p.replaceChildren(el('span', { class: 'muted' }, '–'));
  cell('created').replaceChildren(clockCell(t.created_at));
}

function renderTasks() {
  const body = $('tasks');
  const focusedId = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.open : undefined;
  const rows = new Map([...body.children].map((tr) => [tr.dataset.taskId, tr]));
  const same = view.tasks.length === body.children.length &&
    view.tasks.every((t, i) => body.children[i].dataset.taskId === t.task_id);
  if (same) {
    view.tasks.forEach((t) => fillRow(rows.get(t.task_id), t));
  } else {
    body.replaceChildren(...view.tasks.map((t) => {
      const tr = rows.get(t.task_id);
      if (!tr) return taskRow(t);
      fillRow(tr, t);
      return tr;
    }));
  }
  if (focusedId) {
    const b = body.querySelector(`button[data-open="${CSS.escape(focusedId)}"]`);
    if (b && document.activeElement !== b) b.focus();
  }
  $('tasks-empty').hidden = view.tasks.length > 0;
  $('newer').disabled = onFirstPage();
  $('older').disabled = !view.nextCursor;
  $('page-label').textContent = `page ${view.cursors.length}`;
}

function updateRow(t) {
  const tr = $('tasks').querySelector(`tr[data-task-id="${CSS.escape(t.task_id)}"]`);
  if (tr) {
    fillRow(tr, t);
    tr.classList.remove('flash');
    void tr.offsetWidth;  // restart the animation
    tr.classList.add('flash');
  }
}

// A task the page learnt of first-hand (its own submit): shown at once on the first page.
function upsertTask(t) {
  const known = view.byId.get(t.task_id);
  if (known) {
    Object.assign(known, t);
    updateRow(known);
    return;
  }
  if (!onFirstPage() || !matchesFilters(t)) return;
  view.byId.set(t.task_id, t);
  view.tasks.push(t);
  view.tasks.sort((a, b) => (a.task_id < b.task_id ? 1 : a.task_id > b.task_id ? -1 : 0));
  renderTasks();
  // Live inserts grow the first page; past twice its size it is reloaded to its true size.
  if (view.tasks.length > 2 * filters().limit) scheduleRefresh();
}

// ---------------------------------------------------------------------------------------
// What a live event changes (feed.js calls these).

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
  if (ev.task_id === selectedId) scheduleDetail();
}

function onReset() {
  // Events were lost: what the page shows may be stale.
  scheduleRefresh();
  if (!onFirstPage()) loadPage();
  if (selectedId) scheduleDetail();
  pollStats();
}

// ---------------------------------------------------------------------------------------
// A task's details.

const imageUrls = new Map();  // task_id -> blob: URL of its image (images never change)
let detailTimer = null;
let detailSeq = 0;

function scheduleDetail() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => {
    detailTimer = null;
    if (selectedId) loadDetail(selectedId);
  }, 250);
}

async function openTask(id) {
  selectedId = id;
  for (const tr of $('tasks').children) tr.classList.toggle('selected', tr.dataset.taskId === id);
  const panel = $('detail');
  panel.hidden = false;
  $('tasks-area').classList.add('with-detail');
  $('detail-heading').textContent = `Task ${id}`;
  $('detail-body').replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  await loadDetail(id);
  $('detail-heading').focus();
  if (window.matchMedia('(max-width: 1099px)').matches) panel.scrollIntoView({ block: 'start' });
}

function closeTask() {
  const id = selectedId;
  selectedId = null;
  $('detail').hidden = true;
  $('tasks-area').classList.remove('with-detail');
  for (const tr of $('tasks').children) tr.classList.remove('selected');
  const b = id && $('tasks').querySelector(`button[data-open="${CSS.escape(id)}"]`);
  if (b) b.focus();
}

async function loadDetail(id) {
  const seq = ++detailSeq;
  let t;
  try {
    t = await apiJson(`/api/v1/tasks/${encodeURIComponent(id)}`);
  } catch (err) {
    if (seq === detailSeq && !(err instanceof AuthDismissed)) {
      $('detail-body').replaceChildren(el('p', { class: 'error' }, `Cannot load the task: ${err.message}`));
    }
    return;
  }
  if (seq !== detailSeq || id !== selectedId) return;
  upsertKnown(t);
  renderDetail(t);
}

// Refreshes a row from a full task, without inserting it.
function upsertKnown(t) {
  const known = view.byId.get(t.task_id);
  if (!known) return;
  Object.assign(known, t);
  const tr = $('tasks').querySelector(`tr[data-task-id="${CSS.escape(t.task_id)}"]`);
  if (tr) fillRow(tr, known);
}

function renderDetail(t) {
  const body = $('detail-body');
  const focusCancel = document.activeElement && document.activeElement.id === 'cancel-button';
  const actions = el('div', { class: 'actions' });
  if (t.status === 'QUEUED' || t.status === 'RUNNING') {
    actions.append(el('button', {
      type: 'button', id: 'cancel-button', class: 'danger', onclick: () => cancelTask(t.task_id),
    }, 'Cancel task'));
  }
  const message = el('p', { id: 'detail-message', class: 'message', role: 'status' });
  const rows = [
    ['Status', statusBadge(t.status)],
    ['Type', t.type],
    ['Priority', String(t.priority)],
    ['Attempt', `${t.attempt} of ${t.max_attempts}`],
    ['Created', timeCell(t.created_at)],
    ['Started', t.started_at ? timeCell(t.started_at) : '–'],
    ['Finished', t.finished_at ? timeCell(t.finished_at) : '–'],
    ['Backend', t.backend || '–'],
  ];
  if (t.status === 'QUEUED') {
    if (t.queue_position !== undefined && t.queue_position !== null) rows.push(['Queue position', String(t.queue_position)]);
    if (t.estimated_start) rows.push(['Estimated start', timeCell(t.estimated_start)]);
    if (t.next_attempt_at) rows.push(['Next attempt', timeCell(t.next_attempt_at)]);
  }
  if (t.error) rows.push(['Error', el('span', { class: 'error' }, t.error)]);
  if (t.result) rows.push(['Result', `${t.result.size} bytes, ${t.result.content_type}`]);
  if (t.result_url) rows.push(['Result URL', t.result_url]);
  const prompt = promptOf(t);
  if (prompt) rows.push(['Prompt', prompt]);
  const dl = el('dl', { class: 'kv' });
  for (const [k, v] of rows) dl.append(el('dt', null, k), el('dd', null, v));

  let image = null;
  if (t.type === 'image' && t.status === 'DONE' && t.result_url) {
    image = el('figure', { class: 'result-image' },
      el('img', { id: 'result-image', alt: prompt ? `Result: ${prompt}` : 'Result image' }));
    loadImage(t.task_id, t.result_url, image.firstChild);
  }

  const attempts = t.attempts || [];
  const attemptsBox = el('div', { class: 'attempts' }, el('h3', null, `Attempts (${attempts.length})`));
  if (attempts.length) {
    const tb = el('tbody');
    for (const a of attempts) {
      tb.append(el('tr', { 'data-outcome': a.outcome },
        el('td', { class: 'num' }, String(a.number)),
        el('td', null, el('span', { title: a.backend }, hostOf(a.backend))),
        el('td', null, a.outcome),
        el('td', { class: 'num' }, `${a.duration_ms} ms`),
        el('td', null, a.error ? el('span', { class: 'error' }, a.error) : '–')));
    }
    attemptsBox.append(el('div', { class: 'table-wrap' }, el('table', { class: 'attempts-table' },
      el('thead', null, el('tr', null,
        el('th', { scope: 'col' }, '#'), el('th', { scope: 'col' }, 'Backend'),
        el('th', { scope: 'col' }, 'Outcome'), el('th', { scope: 'col' }, 'Took'),
        el('th', { scope: 'col' }, 'Error'))),
      tb)));
  } else {
    attemptsBox.append(el('p', { class: 'muted' }, 'None yet.'));
  }

  const json = el('details', { class: 'json' },
    el('summary', null, 'JSON'),
    el('pre', { tabindex: 0 }, JSON.stringify(t, null, 2)));
  const oldJson = body.querySelector('details.json');
  if (oldJson && oldJson.open) json.open = true;

  body.replaceChildren(...[actions, message, image, dl, attemptsBox, json].filter(Boolean));
  $('detail').dataset.status = t.status;
  if (focusCancel) {
    const c = $('cancel-button');
    (c || $('detail-heading')).focus();
  }
}

async function loadImage(id, url, img) {
  let src = imageUrls.get(id);
  if (!src) {
    try {
      const res = await api(url);
      if (!res.ok) throw new Error(await errorText(res));
      src = URL.createObjectURL(await res.blob());
    } catch (err) {
      if (!(err instanceof AuthDismissed)) img.replaceWith(el('p', { class: 'error' }, `Cannot load the image: ${err.message}`));
      return;
    }
    imageUrls.set(id, src);
    // Keep the last few images only.
    while (imageUrls.size > 20) {
      const [oldId, oldUrl] = imageUrls.entries().next().value;
      URL.revokeObjectURL(oldUrl);
      imageUrls.delete(oldId);
    }
  }
  img.src = src;
}

async function cancelTask(id) {
  const button = $('cancel-button');
  if (button) button.disabled = true;
  const say = (text, cls) => {
    const m = $('detail-message');
    if (m) {
      m.textContent = text;
      m.className = `message ${cls || ''}`;
    }
  };
  try {
    const res = await api(`/api/v1/tasks/${encodeURIComponent(id)}`, { method: 'DELETE' });
    if (res.ok) {
      const t = await res.json();
      upsertKnown(t);
      const known = view.byId.get(id);
      if (known) updateRow(known);
      if (selectedId === id) renderDetail(t);
      say('Canceled.', 'ok');
    } else if (res.status === 409) {
      say('The task had already finished.', 'error');
      if (selectedId === id) loadDetail(id);
    } else {
      say(`Cannot cancel: ${await errorText(res)}`, 'error');
      if (button) button.disabled = false;
    }
  } catch (err) {
    if (!(err instanceof AuthDismissed)) say(`Cannot cancel: ${err.message}`, 'error');
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Submitting an image prompt.

async function submitPrompt(event) {
  event.preventDefault();
  const prompt = $('prompt').value.trim();
  const message = $('submit-message');
  if (!prompt) {
    message.textContent = 'Write a prompt first.';
    message.className = 'message error';
    $('prompt').focus();
    return;
  }
  const button = $('submit-button');
  button.disabled = true;
  try {
    const res = await api('/api/v1/tasks', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'image', payload: { prompt }, priority: Number($('priority').value) }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const t = await res.json();
    upsertTask(t);
    message.replaceChildren('Submitted ', el('button', {
      type: 'button', class: 'link', 'data-open': t.task_id,
    }, t.task_id), '.');
    message.className = 'message ok';
    $('prompt').value = '';
  } catch (err) {
    if (err instanceof AuthDismissed) return;
    message.textContent = `Not submitted: ${err.message}`;
    message.className = 'message error';
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Wiring.

function onFilterChange() {
  view.cursors = [null];
  view.nextCursor = null;
  loadPage();
}

function init() {
  $('submit-form').addEventListener('submit', submitPrompt);
  $('filter-form').addEventListener('submit', (e) => e.preventDefault());
  $('filter-status').addEventListener('change', onFilterChange);
  $('filter-type').addEventListener('change', onFilterChange);
  $('page-size').addEventListener('change', onFilterChange);
  $('older').addEventListener('click', () => {
    if (!view.nextCursor) return;
    view.cursors.push(view.nextCursor);
    loadPage();
  });
  $('newer').addEventListener('click', () => {
    if (onFirstPage()) return;
    view.cursors.pop();
    loadPage();
  });
  // One listener for every "show task" button, in the table and in messages.
  document.addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('button[data-open]');
    if (b) openTask(b.dataset.open);
  });
  $('detail-close').addEventListener('click', closeTask);
  $('detail').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeTask();
  });
  wireTokenDialog(() => {
    // Anything that stopped for want of a token starts again with it.
    loadPage();
    pollStats();
    if (!streamStarted()) startStream();  // from the last event seen, if any
    if (selectedId) loadDetail(selectedId);
  });
  wireStats();
  setFeedHandlers(applyEvent, onReset);

  // The stats first: they give the event id to stream from, so the list fetched after it
  // misses nothing (a change in between is both in the list and replayed, applied twice
  // harmlessly).
  askFirstIfNeeded().then(pollStats).then(loadPage);
}

init();
