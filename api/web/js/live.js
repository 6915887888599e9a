// The WebSocket feed: one connection per logged-in tab, reconnecting with backoff; views
// subscribe to event types and are dropped when the route changes.
import { accessToken } from './api.js';

let socket = null;
let retryDelay = 1000;
let retryTimer = null;
let wanted = false;
const handlers = new Map();
const stateListeners = new Set();

export function onLiveState(listener) {
  stateListeners.add(listener);
}

function setState(state) {
  for (const listener of stateListeners) listener(state);
}

/** Start the feed (a no-op when it runs or waits to reconnect). */
export function connect() {
  if (wanted) return;
  wanted = true;
  open();
}

function open() {
  if (socket && socket.readyState <= WebSocket.OPEN) return;
  const token = accessToken();
  if (!token) return;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  socket.addEventListener('open', () => {
    retryDelay = 1000;
    setState('on');
  });
  socket.addEventListener('message', (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    for (const handler of handlers.get(event.type) || []) handler(event.payload || {}, event);
    for (const handler of handlers.get('*') || []) handler(event.payload || {}, event);
  });
  socket.addEventListener('close', () => {
    socket = null;
    setState('off');
    if (!wanted) return;
    retryTimer = setTimeout(open, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  });
}

export function disconnect() {
  wanted = false;
  clearTimeout(retryTimer);
  if (socket) socket.close();
  socket = null;
  setState('off');
}

/** Subscribe to an event type ('*' for all); returns the unsubscribe function. */
export function subscribe(type, handler) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(handler);
  return () => handlers.get(type).delete(handler);
}
