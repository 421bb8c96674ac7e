// The Tasks panel: the submit form, the filters, the pager and the task table. The list is
// fetched on load, on a filter or page change and when the event feed asks (see app.js);
// between fetches, events and this page's own submits and cancels update the rows in place.
import { $, el } from './dom.js';
import { AuthDismissed, api, apiJson, errorText } from './api.js';
import { clockCell, promptOf, shortId, statusBadge } from './format.js';

// What the table shows, and which task's details are open; app.js and detail.js use it too.
export const view = {
  tasks: [],              // the rows shown, newest first
  byId: new Map(),        // task_id -> task, for the rows shown
  cursors: [null],        // cursor of each page visited; the last is the current page's
  nextCursor: null,
  refreshTimer: null,
  selectedId: null,       // the task whose details are open
};

// "kb_id=kb_123 tier=gold" -> [['kb_id', 'kb_123'], ['tier', 'gold']]
function parseLabels(text) {
  const out = [];
  for (const part of (text || '').trim().split(/\s+/)) {
    const at = part.indexOf('=');
    if (at > 0) out.push([part.slice(0, at), part.slice(at + 1)]);
  }
  return out;
}

const filters = () => ({
  status: $('filter-status').value,
  type: $('filter-type').value,
  labels: parseLabels($('filter-label').value),
  limit: Number($('page-size').value) || 25,
});
export const onFirstPage = () => view.cursors.length === 1;

export function matchesFilters(task) {
  const f = filters();
  const labels = task.labels || {};
  return (!f.status || task.status === f.status) && (!f.type || task.type === f.type) &&
    f.labels.every(([k, v]) => labels[k] === v);
}

export async function loadPage() {
  const f = filters();
  const q = new URLSearchParams({ limit: String(f.limit) });
  if (f.status) q.set('status', f.status);
  if (f.type) q.set('type', f.type);
  for (const [k, v] of f.labels) q.set(`label.${k}`, v);
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
export function scheduleRefresh() {
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
  tr.classList.toggle('selected', t.task_id === view.selectedId);
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

export function updateRow(t) {
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

// Refreshes a row from a full task, without inserting it.
export function upsertKnown(t) {
  const known = view.byId.get(t.task_id);
  if (!known) return;
  Object.assign(known, t);
  const tr = $('tasks').querySelector(`tr[data-task-id="${CSS.escape(t.task_id)}"]`);
  if (tr) fillRow(tr, known);
}

// The submit form: an image prompt, shown in the table at once.
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

// A new filter or page size starts again from the first page.
function onFilterChange() {
  view.cursors = [null];
  view.nextCursor = null;
  loadPage();
}

export function wireTasks() {
  $('submit-form').addEventListener('submit', submitPrompt);
  $('filter-form').addEventListener('submit', (e) => e.preventDefault());
  $('filter-status').addEventListener('change', onFilterChange);
  $('filter-type').addEventListener('change', onFilterChange);
  $('filter-label').addEventListener('change', onFilterChange);
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
}
