// Sessions: the filtered, sorted, paginated list (state in the URL, so a view can be shared),
// and one session's page with its handshake, counters, geo, risk breakdown and threats.
import { get, listOf, query } from '../api.js';
import { h, field, select, replace } from '../dom.js';
import { label, num, risk, severity, text, time, duration } from '../format.js';
import { setQuery } from '../router.js';
import { subscribe } from '../live.js';

const PAGE_SIZES = [25, 50, 100];
// [field, heading, sortable (the API sorts only where an index serves the order), hidden on a narrow screen]
const COLUMNS = [
  ['start_time', 'Started', true, false],
  ['client_ip', 'Client', true, false],
  ['server_ip', 'Server', false, true],
  ['status', 'Status', true, true],
  ['auth_result', 'Auth', false, false],
  ['client_country', 'Country', false, true],
  ['data_transferred', 'MiB', false, true],
  ['risk_score', 'Risk', true, false],
];
const cellClass = (key, numeric) => [numeric ? 'num' : '', COLUMNS.find(([name]) => name === key)[3] ? 'hide-narrow' : ''].join(' ').trim() || null;
const FILTERS = ['status', 'client_ip', 'min_risk', 'max_risk', 'from', 'to'];

/** `sort` is `column` (ascending) or `-column` (descending). */
function parseSort(sort) {
  const descending = sort.startsWith('-');
  return { column: descending ? sort.slice(1) : sort, descending };
}

export async function sessionsView(ctx) {
  const q = ctx.query;
  const limit = Number(q.get('limit')) || 50;
  const page = Math.max(1, Number(q.get('page')) || 1);
  const sort = q.get('sort') || '-start_time';
  const filters = Object.fromEntries(FILTERS.map((key) => [key, q.get(key) || '']));
  const asInstant = (local) => (local ? new Date(local).toISOString() : '');
  const body = await get(`/api/sessions${query({ ...filters, from: asInstant(filters.from), to: asInstant(filters.to), sort, limit, offset: (page - 1) * limit })}`);
  const sessions = listOf(body, 'sessions');
  // The API counts matches up to a cap (`total_capped`) so a huge table answers fast.
  const total = Number(body.total ?? sessions.length);
  const capped = Boolean(body.total_capped);
  const pages = Math.max(1, Math.ceil(total / limit));
  const morePages = capped || page < pages;
  const current = { ...filters, sort, limit, page };

  const { column: sortColumn, descending } = parseSort(sort);
  const header = h('tr', {}, COLUMNS.map(([key, title, sortable]) => {
    const numeric = key === 'risk_score' || key === 'data_transferred';
    if (!sortable) return h('th', { scope: 'col', class: cellClass(key, numeric) }, title);
    const active = key === sortColumn;
    const next = active && descending ? key : `-${key}`;
    return h('th', { scope: 'col', class: cellClass(key, numeric), 'aria-sort': active ? (descending ? 'descending' : 'ascending') : 'none' },
      h('button', { type: 'button', class: 'sort', onclick: () => setQuery({ ...current, sort: next, page: 1 }) },
        title, active ? (descending ? ' ▼' : ' ▲') : ''));
  }));
  const rows = sessions.map((session) => h('tr', {},
    h('td', {}, h('a', { href: `#/sessions/${encodeURIComponent(session.id)}` }, time(session.start_time))),
    h('td', { class: 'mono' }, `${text(session.client_ip)}:${text(session.client_port)}`),
    h('td', { class: 'mono hide-narrow' }, `${text(session.server_ip)}:${text(session.server_port)}`),
    h('td', { class: 'hide-narrow' }, text(session.status)),
    h('td', {}, text(session.auth_result)),
    h('td', { class: 'hide-narrow' }, text(session.client_country)),
    h('td', { class: 'num hide-narrow' }, num(session.data_transferred, 2)),
    h('td', { class: 'num' }, risk(session.risk_score))));

  const form = h('form', {
    class: 'filters',
    'aria-label': 'Filter sessions',
    onsubmit: (event) => {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(event.target));
      setQuery({ ...data, sort, page: 1 });
    },
  },
  field('Status', select('status', ['', 'active', 'terminated', 'blocked', 'quarantined'], filters.status)),
  field('Client address', h('input', { name: 'client_ip', value: filters.client_ip, placeholder: '203.0.113.7', size: 16 })),
  field('Min risk', h('input', { name: 'min_risk', type: 'number', min: 0, max: 100, value: filters.min_risk })),
  field('Max risk', h('input', { name: 'max_risk', type: 'number', min: 0, max: 100, value: filters.max_risk })),
  field('From', h('input', { name: 'from', type: 'datetime-local', value: filters.from })),
  field('To', h('input', { name: 'to', type: 'datetime-local', value: filters.to })),
  field('Per page', select('limit', PAGE_SIZES.map((n) => [n, String(n)]), limit)),
  h('button', { type: 'submit', class: 'btn' }, 'Apply'),
  h('button', { type: 'button', class: 'btn secondary', onclick: () => setQuery({ sort }) }, 'Clear'));

  const newSessions = h('p', { class: 'muted', role: 'status' });
  let arrived = 0;
  ctx.onCleanup(subscribe('vnc_session_started', () => {
    arrived += 1;
    replace(newSessions, `${arrived} new session${arrived === 1 ? '' : 's'} since this page loaded — `,
      h('a', { href: location.hash, onclick: (event) => { event.preventDefault(); setQuery({ ...current, page: 1, _: Date.now() }); } }, 'show'));
  }));

  return h('div', {},
    h('h1', {}, 'Sessions'),
    form,
    newSessions,
    h('div', { class: 'table-wrap' },
      h('table', { id: 'sessions-table' },
        h('caption', { class: 'muted' }, capped ? `More than ${num(total)} sessions` : `${num(total)} sessions`),
        h('thead', {}, header),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'muted' }, 'No sessions match.'))))),
    h('nav', { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', class: 'btn secondary small', disabled: page <= 1, onclick: () => setQuery({ ...current, page: page - 1 }) }, '← Previous'),
      h('span', {}, `Page ${num(page)} of ${num(pages)}${capped ? '+' : ''}`),
      h('button', { type: 'button', class: 'btn secondary small', disabled: !morePages, onclick: () => setQuery({ ...current, page: page + 1 }) }, 'Next →')));
}

/** A definition list; a pair whose value is `undefined` (a field the API does not send) is left out. */
function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, value]) => value !== undefined).flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

/** The security type by name, with its number when the name does not already say it. */
function securityType(session) {
  const name = text(session.auth_method);
  const number = session.security_type;
  return number === null || number === undefined || name.includes(String(number)) ? name : `${name} (${number})`;
}

/** `format` of the field when the API sends it, else `undefined` so the fact is left out. */
const present = (value, format) => (value === undefined ? undefined : format(value));

const COMPONENTS = ['anomaly', 'threat', 'behavioral', 'geographic', 'temporal'];
const SEED_WEIGHTS = [0.3, 0.25, 0.2, 0.15, 0.1];

/** The score bands of the scorer (scorer/src/risk.rs): the worst finding's severity → [floor, ceiling]. */
const BANDS = { critical: [90, 100], high: [70, 90], medium: [40, 70] };
const NO_FLOOR_BAND = [0, 40];

/**
 * How the scorer reached the risk: each component is 0-100; the composite is the seed's weighted
 * mean, sum(weight × component) / sum(weights), and each row shows its share of it, so the shares
 * add up to the composite. The composite is then placed in the band of the worst finding
 * (critical 90-100, high 70-90, medium 40-70, otherwise 0-40): risk = floor + (ceiling − floor) ×
 * composite / 100.
 */
function riskBreakdown(session) {
  const components = session.risk_components || {};
  const weights = Array.isArray(components.weights) && components.weights.length === 5 ? components.weights : SEED_WEIGHTS;
  const weightSum = weights.reduce((sum, weight) => sum + Number(weight), 0) || 1;
  const reasons = Array.isArray(session.risk_reasons) ? session.risk_reasons : [];
  let composite = 0;
  const rows = COMPONENTS.map((name, index) => {
    const value = Math.max(0, Math.min(100, Number(components[name]) || 0));
    const share = (weights[index] * value) / weightSum;
    composite += share;
    const fill = h('span', {});
    fill.style.width = `${value}%`;
    const own = reasons.filter((reason) => reason.component === name);
    const status = name === 'anomaly' && components.anomaly_status ? h('span', { class: 'muted', id: 'anomaly-status' }, ` ${components.anomaly_status}`) : null;
    return h('div', {},
      h('div', { class: 'component', 'data-component': name },
        h('span', {}, `${name} ×${weights[index]}`, status),
        h('span', { class: 'track', role: 'meter', 'aria-label': `${name} component`, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': value.toFixed(1) }, fill),
        h('span', { class: 'num' }, value.toFixed(1)),
        h('span', { class: 'num share', title: 'share of the composite' }, `+${share.toFixed(1)}`)),
      own.length ? h('ul', { class: 'reasons' }, own.map((reason) => h('li', {}, `${reason.reason} (${reason.rule}, ${Number(reason.score).toFixed(1)})`))) : null);
  });
  const [floor, ceiling] = BANDS[components.floor] || NO_FLOOR_BAND;
  const risk = floor + ((ceiling - floor) * composite) / 100;
  rows.push(h('p', { class: 'component-total' }, `Composite = Σ weight × component / ${num(weightSum, 2)} = `,
    h('strong', { id: 'risk-composite' }, composite.toFixed(1))));
  rows.push(h('p', { class: 'component-total', id: 'risk-band' },
    components.floor
      ? `Worst finding: ${components.floor} (${text(components.floor_rule)}), band ${floor}–${ceiling}: risk = ${floor} + ${ceiling - floor} × composite / 100 = `
      : `No finding of medium or worse, band ${floor}–${ceiling}: risk = ${ceiling} × composite / 100 = `,
    h('strong', { id: 'risk-total' }, risk.toFixed(1))));
  return rows;
}

function securityTypes(list) {
  return Array.isArray(list) && list.length ? list.join(', ') : '—';
}

export async function sessionView(ctx) {
  const session = await get(`/api/sessions/${encodeURIComponent(ctx.params.id)}`);
  const threats = session.threat_logs || session.threats || [];
  const geo = session.geo || {};
  const seconds = session.end_time ? (new Date(session.end_time) - new Date(session.start_time)) / 1000 : null;
  const timeline = Array.isArray(session.timeline) ? session.timeline : [];

  return h('div', {},
    h('p', {}, h('a', { href: '#/sessions' }, '← Sessions')),
    h('h1', {}, 'Session ', h('span', { class: 'mono' }, session.id)),
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Risk'), h('div', { class: 'value' }, risk(session.risk_score))),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Anomaly'), h('div', { class: 'value' }, num(session.anomaly_score, 1))),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Status'), h('div', { class: 'value' }, text(session.status))),
      h('div', { class: 'card' }, h('div', { class: 'label' }, 'Duration'), h('div', { class: 'value' }, seconds === null ? 'open' : duration(seconds)))),
    h('div', { class: 'panels' },
      h('section', { class: 'panel', 'aria-labelledby': 'hs-title' }, h('h2', { id: 'hs-title' }, 'Handshake'),
        facts([
          ['Client', h('span', { class: 'mono' }, `${text(session.client_ip)}:${text(session.client_port)}`)],
          ['Server', h('span', { class: 'mono' }, `${text(session.server_ip)}:${text(session.server_port)}`)],
          ['Client version', text(session.client_version || session.user_agent)],
          ['Server version', text(session.server_version)],
          ['Security types offered', present(session.security_types_offered, securityTypes)],
          ['Security type', securityType(session)],
          ['Auth result', text(session.auth_result)],
          ['Failure reason', text(session.failure_reason)],
          ['Desktop', `${text(session.desktop_name)}${session.width ? ` ${session.width}×${session.height}` : ''}`],
          ['Encrypted', session.encrypted ? 'yes' : 'no'],
          ['Started', time(session.start_time)],
          ['Ended', `${time(session.end_time)}${session.end_reason ? ` (${session.end_reason})` : ''}`],
          ['Agent', text(session.agent_id)],
        ])),
      h('section', { class: 'panel', 'aria-labelledby': 'ct-title' }, h('h2', { id: 'ct-title' }, 'Counters'),
        facts([
          ['Data transferred', `${num(session.data_transferred, 2)} MiB`],
          ['Bytes client→server', num(session.bytes_c2s)],
          ['Bytes server→client', num(session.bytes_s2c)],
          ['Packets sent / received', `${num(session.packets_sent)} / ${num(session.packets_received)}`],
          ['Key events', num(session.key_events)],
          ['Pointer events', num(session.pointer_events)],
          ['Clipboard operations', num(session.clipboard_operations)],
          ['Framebuffer updates', num(session.framebuffer_updates ?? session.screenshots_count)],
          ['File operations', num(session.file_operations)],
          ['Parse errors', present(session.parse_errors, num)],
        ])),
      h('section', { class: 'panel', 'aria-labelledby': 'geo-title' }, h('h2', { id: 'geo-title' }, 'Geography'),
        facts([
          ['Country', text(geo.country)],
          ['City', text(geo.city)],
          ['ASN', text(geo.asn)],
          ['AS organisation', text(geo.as_org)],
          ['Address class', text(geo.address_class)],
          ['Server country', text(geo.server_country)],
          ['Distance', geo.distance_km != null ? `${num(geo.distance_km)} km` : '—'],
          ['Reputation', text(geo.reputation)],
        ])),
      h('section', { class: 'panel wide', 'aria-labelledby': 'rc-title' }, h('h2', { id: 'rc-title' }, 'Risk components'),
        riskBreakdown(session),
        h('p', { class: 'muted' }, `Model ${text(session.model_version)}, scored ${time(session.scored_at)}`))),
    timeline.length ? h('section', { class: 'panel', 'aria-labelledby': 'tl-title' }, h('h2', { id: 'tl-title' }, 'Timeline'),
      h('ol', { class: 'timeline' }, timeline.map((entry) => h('li', {}, h('span', { class: 'muted' }, time(entry.time)), ' ',
        h('strong', {}, text(entry.event)), entry.detail ? ` — ${entry.detail}` : '')))) : null,
    h('section', { class: 'panel', 'aria-labelledby': 'th-title' }, h('h2', { id: 'th-title' }, `Threats (${threats.length})`),
      threats.length
        ? h('ul', { class: 'feed' }, threats.map((threat) => h('li', { class: `threat sev-border-${threat.severity}` },
          h('div', { class: 'threat-head' }, severity(threat.severity), h('span', { class: 'title' }, label(threat.threat_type)),
            h('span', { class: `status-${threat.status}` }, text(threat.status)), h('span', { class: 'muted' }, time(threat.timestamp))),
          h('div', { class: 'threat-meta' }, text(threat.description)))))
        : h('p', { class: 'muted' }, 'No threats for this session.')));
}
