// Overview: the headline counters, risk distribution and threats per hour, kept current by the
// WebSocket (counters change as events arrive; a debounced re-read keeps them exact).
import { get, listOf, query, serverNow } from '../api.js';
import { barChart } from '../charts.js';
import { h, replace } from '../dom.js';
import { ago, band, label, num, severity, text } from '../format.js';
import { subscribe } from '../live.js';

const HOURS = 24;

function hourBuckets(threats) {
  const now = new Date(serverNow());
  now.setMinutes(0, 0, 0);
  const start = now.getTime() - (HOURS - 1) * 3600e3;
  const buckets = Array.from({ length: HOURS }, (_, i) => ({ at: start + i * 3600e3, value: 0 }));
  for (const threat of threats) addToBuckets(buckets, threat.timestamp || threat.detected_at);
  return buckets;
}

function addToBuckets(buckets, when) {
  const index = Math.floor((new Date(when).getTime() - buckets[0].at) / 3600e3);
  if (index >= 0 && index < buckets.length) buckets[index].value += 1;
  return index >= 0 && index < buckets.length;
}

/** The API's ten risk buckets (0-10, ..., 90-100), each coloured by its band. */
function distribution(histogram) {
  const width = 100 / Math.max(1, histogram.length);
  return histogram.map((count, i) => ({ label: `${i * width}–${(i + 1) * width}`, value: Number(count) || 0, cls: `bar-${band(i * width)}` }));
}

function card(title, value, id, tone) {
  return h('div', { class: 'card' },
    h('div', { class: 'label', id: `${id}-label` }, title),
    h('div', { class: `value ${tone || ''}`, id, 'aria-labelledby': `${id}-label` }, value));
}

export async function overviewView(ctx) {
  const since = new Date(serverNow() - HOURS * 3600e3).toISOString();
  const [dashboard, threatsBody, status] = await Promise.all([
    get('/api/analytics/dashboard'),
    get(`/api/threats${query({ from: since, limit: 500 })}`),
    get('/api/status').catch(() => null),
  ]);
  const threats = listOf(threatsBody, 'threats');
  const buckets = hourBuckets(threats);
  // The API's hourly counts when it sends them (exact beyond the 500 threats listed here).
  for (const bucket of Array.isArray(dashboard.threats_over_time) ? dashboard.threats_over_time : []) {
    const index = Math.round((new Date(bucket.start).getTime() - buckets[0].at) / 3600e3);
    if (index >= 0 && index < buckets.length) buckets[index].value = Number(bucket.count) || 0;
  }
  const state = { ...dashboard };

  const cards = h('div', { class: 'cards' });
  const riskPanel = h('section', { class: 'panel', 'aria-labelledby': 'risk-title' });
  const timePanel = h('section', { class: 'panel', 'aria-labelledby': 'time-title' });
  const recent = h('ul', { class: 'feed', id: 'recent-threats' });

  function drawCards() {
    const systemStatus = state.system_status || (status && status.status) || 'unknown';
    replace(cards,
      card('Active sessions', num(state.active_sessions), 'active-sessions'),
      card('Threats, last 24 h', num(state.threats_24h), 'threats-24h', Number(state.threats_24h) > 0 ? 'bad' : ''),
      card('Blocked addresses', num(state.blocked_ips), 'blocked-ips'),
      card('System status', systemStatus, 'system-status', systemStatus === 'healthy' ? 'ok' : 'bad'),
    );
  }

  function drawCharts() {
    const bars = distribution(state.risk_histogram || []);
    const sessions = bars.reduce((sum, bar) => sum + bar.value, 0);
    replace(riskPanel,
      h('h2', { id: 'risk-title' }, 'Risk of the sessions of the last 24 h'),
      barChart(bars, { description: `Sessions per risk score, ${sessions} in all` }),
      sessions ? null : h('p', { class: 'muted' }, 'No session started in the last 24 h.'),
    );
    const series = buckets.map((bucket) => ({ label: `${new Date(bucket.at).getHours()}h`, value: bucket.value }));
    replace(timePanel,
      h('h2', { id: 'time-title' }, 'Threats per hour, last 24 h'),
      barChart(series, { description: `Threats per hour over the last 24 hours, ${series.reduce((a, b) => a + b.value, 0)} in all`, labelEvery: 3 }),
    );
  }

  function threatItem(threat, fresh) {
    const sev = String(threat.severity || 'low').toLowerCase();
    return h('li', { class: `threat sev-border-${sev}${fresh ? ' fresh' : ''}` },
      h('div', { class: 'threat-head' }, severity(sev), h('span', { class: 'title' }, label(threat.threat_type)),
        h('span', { class: 'mono' }, text(threat.source_ip)), h('span', { class: 'muted' }, ago(threat.timestamp || threat.detected_at))),
      h('div', { class: 'threat-meta' }, text(threat.description)));
  }

  drawCards();
  drawCharts();
  replace(recent, ...threats.slice(0, 8).map((threat) => threatItem(threat)));

  let refetch = null;
  function refreshSoon() {
    clearTimeout(refetch);
    refetch = setTimeout(async () => {
      try {
        Object.assign(state, await get('/api/analytics/dashboard'));
        if (ctx.isCurrent()) { drawCards(); drawCharts(); }
      } catch {
        // The live counters stay; the next event tries again.
      }
    }, 1000);
  }
  ctx.onCleanup(() => clearTimeout(refetch));
  ctx.onCleanup(subscribe('threat_detected', (threat) => {
    state.threats_24h = (Number(state.threats_24h) || 0) + 1;
    addToBuckets(buckets, threat.timestamp || threat.detected_at || new Date().toISOString());
    recent.prepend(threatItem(threat, true));
    while (recent.children.length > 8) recent.lastChild.remove();
    drawCards();
    drawCharts();
    refreshSoon();
  }));
  ctx.onCleanup(subscribe('vnc_session_started', () => {
    state.active_sessions = (Number(state.active_sessions) || 0) + 1;
    drawCards();
    refreshSoon();
  }));
  ctx.onCleanup(subscribe('firewall_action', refreshSoon));
  ctx.onCleanup(subscribe('system_alert', (alert) => {
    state.system_status = alert.status || alert.level || state.system_status;
    drawCards();
    refreshSoon();
  }));

  return h('div', {},
    h('h1', {}, 'Overview'),
    cards,
    h('div', { class: 'panels' }, riskPanel, timePanel),
    h('section', { class: 'panel', 'aria-labelledby': 'recent-title' },
      h('h2', { id: 'recent-title' }, 'Latest threats'),
      recent,
      h('p', {}, h('a', { href: '#/threats' }, 'All threats'))));
}
