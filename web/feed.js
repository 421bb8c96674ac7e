// The live event feed: GET /api/v1/events read as SSE with fetch (so it can carry the
// Authorization header), resumed from the last event id after a break, with backoff. What an
// event changes on the page is up to the handlers app.js sets (setFeedHandlers).
import { setConn } from './dom.js';
import { AuthDismissed, api } from './api.js';

const STREAM_IDLE_MS = 45000;  // three missed keep-alives at the default 15 s
const STREAM_MAX_DELAY_MS = 30000;

let lastEventId = null;
let started = false;    // connected, connecting or waiting to reconnect
let live = false;       // a stream is open now
let applyEvent = null;  // (event) => void, for each task event
let onReset = null;     // () => void, when events may have been lost

export const streamStarted = () => started;
export const streamLive = () => live;

export function setFeedHandlers(onEvent, onLostEvents) {
  applyEvent = onEvent;
  onReset = onLostEvents;
}

// Reads one SSE stream to its end (or until it is idle too long); stream.gotData tells
// whether it received anything.
async function readStream(res, controller) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data = [];
  let eventName = '';
  let eventId = null;
  let idle = null;
  const arm = () => {
    clearTimeout(idle);
    idle = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
  };
  arm();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stream.gotData = true;
      arm();
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        // A lone \r at the end of the buffer may be half of \r\n: wait for more.
        if (buf[nl] === '\r' && nl === buf.length - 1) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (eventId !== null) lastEventId = eventId;
          if (data.length) dispatch(eventName || 'message', data.join('\n'));
          data = [];
          eventName = '';
          eventId = null;
          continue;
        }
        if (line[0] === ':') continue;  // comment: keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'event') eventName = value;
        else if (field === 'id' && !value.includes('\0')) eventId = value;
        else if (field === 'retry' && /^\d+$/.test(value)) stream.retryMs = Number(value);
      }
    }
  } finally {
    clearTimeout(idle);
  }
}

function dispatch(name, data) {
  if (name === 'reset') return onReset();
  if (name !== 'message') return;
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    return;
  }
  applyEvent(ev);
}

const stream = { retryMs: 2000, failures: 0, timer: null, gotData: false, connectedBefore: false };

// afterId: the event to stream after when the page has seen none yet.
export function startStream(afterId) {
  started = true;
  if (lastEventId === null && afterId !== undefined && afterId !== null) lastEventId = String(afterId);
  connectStream();
}

async function connectStream() {
  stream.timer = null;
  const controller = new AbortController();
  const headers = {};
  let path = '/api/v1/events';
  if (lastEventId !== null) {
    headers['Last-Event-ID'] = lastEventId;
    path += `?after=${encodeURIComponent(lastEventId)}`;
  }
  stream.gotData = false;
  try {
    const res = await api(path, { headers, signal: controller.signal });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    live = true;
    setConn('live', 'live');
    // After a break, refetch what is shown: a server that restarted numbers its events
    // afresh and cannot replay what happened while the page was away.
    if (stream.connectedBefore) onReset();
    stream.connectedBefore = true;
    await readStream(res, controller);
  } catch (err) {
    if (err instanceof AuthDismissed) {
      started = false;
      live = false;
      return;
    }
  }
  live = false;
  // Backoff: the server's retry: value, doubling while connections fail, with jitter.
  const got = stream.gotData;
  stream.failures = got ? 0 : stream.failures + 1;
  const delay = got ? stream.retryMs : Math.min(STREAM_MAX_DELAY_MS,
    stream.retryMs * 2 ** Math.min(stream.failures - 1, 5)) * (0.75 + Math.random() / 2);
  setConn('reconnecting', `reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
  stream.timer = setTimeout(connectStream, delay);
  // Changes made while the stream was down are replayed from lastEventId (or announced
  // by a reset event when the server no longer has them).
}
