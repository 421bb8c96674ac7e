// API access: every /api/ call goes through api(), which adds the bearer token and asks for
// one on 401. The token lives in sessionStorage, so it lasts for the tab only; the token
// dialog and the header's token button are wired here too.
import { $, setConn } from './dom.js';

const TOKEN_KEY = 'taskserver.token';

// Thrown once the user closed the token dialog without giving a token: callers stay quiet,
// and the page waits for the token button.
export class AuthDismissed extends Error {}

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let authNeeded = false;       // the server answered 401 at least once
let authDismissed = false;    // the user closed the token dialog without a token
let tokenPrompt = null;       // the pending token dialog, shared by concurrent callers

function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $('token-dialog');
  $('token-reason').textContent = reason;
  $('token-input').value = '';
  tokenPrompt = new Promise((resolve, reject) => {
    const done = (value) => {
      dialog.removeEventListener('close', onClose);
      tokenPrompt = null;
      if (value) {
        token = value;
        authDismissed = false;
        sessionStorage.setItem(TOKEN_KEY, value);
        resolve(value);
      } else {
        // Without a working token everything waits for the "Enter token" button; a token
        // that still works is kept.
        if (!token) {
          authDismissed = true;
          setConn('auth', 'API token needed');
        }
        reject(new AuthDismissed('no token'));
      }
      updateTokenButton();
    };
    const onClose = () => done(dialog.returnValue === 'save' ? $('token-input').value.trim() : '');
    dialog.addEventListener('close', onClose);
  });
  dialog.returnValue = '';
  dialog.showModal();
  $('token-input').focus();
  return tokenPrompt;
}

function updateTokenButton() {
  $('token-button').hidden = !authNeeded && !token;
  $('token-button').textContent = token ? 'Change token' : 'Enter token';
}

export async function api(path, options = {}) {
  for (;;) {
    if (authDismissed) throw new AuthDismissed('no token');
    const headers = new Headers(options.headers || {});
    const used = token;
    if (used) headers.set('Authorization', `Bearer ${used}`);
    const res = await fetch(path, { ...options, headers, cache: 'no-store' });
    if (res.status !== 401) return res;
    authNeeded = true;
    if (used !== token) continue;  // the token changed meanwhile: try the new one
    const rejected = used;
    if (rejected) {
      token = '';
      sessionStorage.removeItem(TOKEN_KEY);
    }
    updateTokenButton();
    await askToken(rejected ? 'The server refused that token. Enter another one.'
      : 'This server needs an API token (Authorization: Bearer).');
  }
}

export async function errorText(res) {
  try {
    const j = await res.json();
    if (j && j.error) return `${j.error.message || j.error.code} (HTTP ${res.status})`;
  } catch {
    // not JSON: fall through
  }
  return `HTTP ${res.status}`;
}

export async function apiJson(path, options) {
  const res = await api(path, options);
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}

// Where the open /health says the API wants a token (an "auth" field, when the server
// has it), the page asks before its first call rather than after a 401.
export async function askFirstIfNeeded() {
  if (token) return;
  try {
    const res = await fetch('/health', { cache: 'no-store' });
    const health = res.ok ? await res.json() : {};
    if (health && health.auth === true) {
      authNeeded = true;
      updateTokenButton();
      await askToken('This server needs an API token (Authorization: Bearer).');
    }
  } catch {
    // No answer or no token given: the API calls that follow sort it out.
  }
}

// onToken runs after the user gave a token through the header's button.
export function wireTokenDialog(onToken) {
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!$('token-input').value.trim()) return;
    $('token-dialog').close('save');
  });
  $('token-cancel').addEventListener('click', () => $('token-dialog').close(''));
  $('token-button').addEventListener('click', async () => {
    try {
      await askToken(token ? 'Enter a new API token.' : 'This server needs an API token (Authorization: Bearer).');
    } catch {
      return;
    }
    onToken();
  });
  updateTokenButton();
}
