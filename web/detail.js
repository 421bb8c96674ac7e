// The task's details panel: opened from any "show task" button, refreshed when the event feed
// reports a change to its task; shows the result image (fetched with the token, kept as a
// blob: URL) and cancels a queued or running task.
import { $, el } from './dom.js';
import { AuthDismissed, api, apiJson, errorText } from './api.js';
import { hostOf, promptOf, statusBadge, timeCell } from './format.js';
import { updateRow, upsertKnown, view } from './tasks.js';

const imageUrls = new Map();  // task_id -> blob: URL of its image (images never change)
let detailTimer = null;
let detailSeq = 0;

export function scheduleDetail() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => {
    detailTimer = null;
    if (view.selectedId) loadDetail(view.selectedId);
  }, 250);
}

async function openTask(id) {
  view.selectedId = id;
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
  const id = view.selectedId;
  view.selectedId = null;
  $('detail').hidden = true;
  $('tasks-area').classList.remove('with-detail');
  for (const tr of $('tasks').children) tr.classList.remove('selected');
  const b = id && $('tasks').querySelector(`button[data-open="${CSS.escape(id)}"]`);
  if (b) b.focus();
}

export async function loadDetail(id) {
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
  if (seq !== detailSeq || id !== view.selectedId) return;
  upsertKnown(t);
  renderDetail(t);
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
  if (t.status === 'FAILED' || t.status === 'CANCELED') {
    actions.append(el('button', {
      type: 'button', id: 'retry-button', onclick: () => retryTask(t.task_id),
    }, 'Retry task'));
  }
  const message = el('p', { id: 'detail-message', class: 'message', role: 'status' });
  const rows = [
    ['Status', statusBadge(t.status)],
    ['Type', t.type],
    ['Priority', String(t.priority)],
    ['Attempt', `${t.attempt} (budget ${t.max_attempts}${t.retries ? `, retried ${t.retries}×` : ''})`],
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
  if (t.run_at) rows.push(['Run at', timeCell(t.run_at)]);
  const labels = Object.entries(t.labels || {});
  if (labels.length) rows.push(['Labels', labels.map(([k, v]) => `${k}=${v}`).join(' ')]);
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

function sayInDetail(text, cls) {
  const m = $('detail-message');
  if (m) {
    m.textContent = text;
    m.className = `message ${cls || ''}`;
  }
}

// A button of the detail panel that changes the task (cancel, retry): on success the row and
// the panel show the task as answered; a 409 (the task moved on meanwhile) reloads the panel.
async function taskAction(id, { buttonId, path, method, verb, done, conflict }) {
  const button = $(buttonId);
  if (button) button.disabled = true;
  try {
    const res = await api(`/api/v1/tasks/${encodeURIComponent(id)}${path}`, { method });
    if (res.ok) {
      const t = await res.json();
      upsertKnown(t);
      const known = view.byId.get(id);
      if (known) updateRow(known);
      if (view.selectedId === id) renderDetail(t);
      sayInDetail(done, 'ok');
    } else if (res.status === 409) {
      sayInDetail(conflict || `Cannot ${verb}: ${await errorText(res)}`, 'error');
      if (view.selectedId === id) loadDetail(id);
    } else {
      sayInDetail(`Cannot ${verb}: ${await errorText(res)}`, 'error');
      if (button) button.disabled = false;
    }
  } catch (err) {
    if (!(err instanceof AuthDismissed)) sayInDetail(`Cannot ${verb}: ${err.message}`, 'error');
    if (button) button.disabled = false;
  }
}

function cancelTask(id) {
  return taskAction(id, {
    buttonId: 'cancel-button', path: '', method: 'DELETE', verb: 'cancel', done: 'Canceled.',
    conflict: 'The task had already finished.',
  });
}

function retryTask(id) {
  return taskAction(id, {
    buttonId: 'retry-button', path: '/retry', method: 'POST', verb: 'retry', done: 'Queued again.',
  });
}

export function wireDetail() {
  // One listener for every "show task" button, in the table and in messages.
  document.addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('button[data-open]');
    if (b) openTask(b.dataset.open);
  });
  $('detail-close').addEventListener('click', closeTask);
  $('detail').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeTask();
  });
}
