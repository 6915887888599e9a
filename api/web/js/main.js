// The router: hash routes (so any static server and the API's embedded files serve one page),
// one view function per route, and a per-view cleanup list for subscriptions and timers.
import { currentUser, logout, onAuthChange } from './api.js';
import { connect, disconnect, onLiveState } from './live.js';
import { h, replace } from './dom.js';
import { parseHash } from './router.js';
import { loginView } from './views/login.js';
import { overviewView } from './views/overview.js';
import { sessionsView, sessionView } from './views/sessions.js';
import { threatsView } from './views/threats.js';
import { firewallView } from './views/firewall.js';
import { fleetView } from './views/fleet.js';

const routes = [
  [/^\/$/, overviewView, 'Overview'],
  [/^\/sessions$/, sessionsView, 'Sessions'],
  [/^\/sessions\/(?<id>[^/]+)$/, sessionView, 'Session'],
  [/^\/threats$/, threatsView, 'Threats'],
  [/^\/firewall$/, firewallView, 'Firewall'],
  [/^\/fleet$/, fleetView, 'Fleet and model'],
];

const main = document.getElementById('main');
let cleanups = [];
let renderCount = 0;

async function render() {
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  const current = ++renderCount;
  const { path, query } = parseHash();
  const user = currentUser();
  const topbar = document.getElementById('topbar');

  if (!user) {
    topbar.hidden = true;
    disconnect();
    document.title = 'Log in · vncguard';
    replace(main, loginView());
    return;
  }
  topbar.hidden = false;
  document.getElementById('who-name').textContent = user.username;
  document.getElementById('who-role').textContent = user.role;
  connect();

  for (const link of document.querySelectorAll('#nav a')) {
    const target = link.getAttribute('href').slice(1);
    const active = target === '/' ? path === '/' : path === target || path.startsWith(`${target}/`);
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }

  const route = routes.find(([pattern]) => pattern.test(path));
  if (!route) {
    replace(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
    return;
  }
  const [pattern, view, title] = route;
  const params = path.match(pattern).groups || {};
  document.title = `${title} · vncguard`;
  const ctx = {
    query,
    params,
    onCleanup: (fn) => cleanups.push(fn),
    isCurrent: () => current === renderCount,
  };
  try {
    const content = await view(ctx);
    if (ctx.isCurrent()) replace(main, content);
  } catch (error) {
    if (!ctx.isCurrent()) return;
    replace(main, h('h1', {}, title), h('p', { class: 'error', role: 'alert' }, `Could not load: ${error.message}`));
  }
}

let lastPath = null;
window.addEventListener('hashchange', () => {
  const { path } = parseHash();
  const moved = path !== lastPath;
  lastPath = path;
  render().then(() => {
    if (!moved) return;
    window.scrollTo(0, 0);
    main.focus({ preventScroll: true });
  });
});

// Re-render when the user logs in or out, not on every token refresh.
let loggedIn = Boolean(currentUser());
onAuthChange((auth) => {
  if (Boolean(auth) === loggedIn) return;
  loggedIn = Boolean(auth);
  render();
});
onLiveState((state) => {
  const el = document.getElementById('live-state');
  el.textContent = state === 'on' ? 'live' : 'offline';
  el.classList.toggle('on', state === 'on');
});
document.getElementById('logout').addEventListener('click', async () => {
  disconnect();
  await logout();
  location.hash = '#/';
});

lastPath = parseHash().path;
render();
