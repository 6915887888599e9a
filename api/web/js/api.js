// The REST client: bearer tokens kept in sessionStorage, refreshed before they expire and once
// more on a 401, and a logout that tells the server to revoke them.

const STORE = 'vncguard.auth';
const REFRESH_MARGIN_SECS = 30;

let auth = load();
let refreshTimer = null;
// The server's clock minus this browser's, from each response's Date header: countdowns and
// "ago" read the server's time, so a laptop whose clock is off shows bans and ages right.
let serverClockOffsetMs = 0;
let refreshing = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && (body.error || body);
    const detail = error && (error.message || error.code);
    super(detail ? `${status}: ${detail}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE));
  } catch {
    return null;
  }
}

function save(next) {
  auth = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  scheduleRefresh();
  for (const listener of listeners) listener(auth);
}

/** Called with the new auth state (or null) on login, refresh and logout. */
export function onAuthChange(listener) {
  listeners.add(listener);
}

/** Now on the server's clock, in milliseconds since the epoch (see `serverClockOffsetMs`). */
export function serverNow() {
  return Date.now() + serverClockOffsetMs;
}

function learnServerClock(response) {
  const date = Date.parse(response.headers.get('date') || '');
  // The header has whole seconds: the server's time lies in the half-open second after it.
  if (Number.isFinite(date)) serverClockOffsetMs = date + 500 - Date.now();
}

export function currentUser() {
  return auth ? auth.user : null;
}

export function accessToken() {
  return auth ? auth.access_token : null;
}

/** Analysts and admins triage and block; viewers only read. */
export function canAct() {
  const role = auth && auth.user && auth.user.role;
  return role === 'analyst' || role === 'admin';
}

/** Only admins manage users and bouncer keys. */
export function isAdmin() {
  return Boolean(auth && auth.user && auth.user.role === 'admin');
}

function fromTokenResponse(body, previous) {
  const expiresIn = Number(body.expires_in) || 900;
  return {
    access_token: body.access_token,
    refresh_token: body.refresh_token || (previous && previous.refresh_token),
    expires_at: Date.now() + expiresIn * 1000,
    // `{user: {username, role}}` (the seed) or `username` and `role` beside the tokens.
    user: body.user || (body.username ? { username: body.username, role: body.role } : previous && previous.user),
  };
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!auth || !auth.refresh_token) return;
  const wait = Math.max(1000, auth.expires_at - Date.now() - REFRESH_MARGIN_SECS * 1000);
  refreshTimer = setTimeout(() => refresh().catch(() => save(null)), wait);
}

export async function login(username, password) {
  const body = await send('POST', '/api/auth/login', { username, password }, false);
  save(fromTokenResponse(body, null));
  return auth.user;
}

export function refresh() {
  if (!refreshing) {
    const previous = auth;
    refreshing = send('POST', '/api/auth/refresh', { refresh_token: previous && previous.refresh_token }, false)
      .then((body) => save(fromTokenResponse(body, previous)))
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function logout() {
  const previous = auth;
  save(null);
  if (!previous) return;
  try {
    await fetch('/api/auth/logout', {
      method: 'POST',
      headers: { Authorization: `Bearer ${previous.access_token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: previous.refresh_token }),
    });
  } catch {
    // The local tokens are gone either way; the server revokes them when it hears of it.
  }
}

async function send(method, path, body, authorised = true) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (authorised && auth) headers.Authorization = `Bearer ${auth.access_token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  learnServerClock(response);
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** An authorised request; a 401 triggers one refresh and one retry, then a logout. */
export async function request(method, path, body) {
  try {
    return await send(method, path, body);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !auth || !auth.refresh_token) throw error;
    try {
      await refresh();
    } catch {
      save(null);
      throw error;
    }
    return send(method, path, body);
  }
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body ?? {});
export const patch = (path, body) => request('PATCH', path, body);
export const del = (path) => request('DELETE', path);

/** A query string from the non-empty entries of an object. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** The array in a list response, whichever key the endpoint uses for it. */
export function listOf(body, key) {
  if (Array.isArray(body)) return body;
  if (!body) return [];
  return body[key] || body.items || body.data || [];
}

scheduleRefresh();
