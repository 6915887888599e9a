// Threats: the live feed with severity colours and, for analysts and admins, triage
// (acknowledge, close with a reason, assign, notes) and blocking the source.
import { canAct, currentUser, get, listOf, patch, post, query } from '../api.js';
import { h, field, select, toast, replace } from '../dom.js';
import { ago, label, num, severity, text, time } from '../format.js';
import { subscribe } from '../live.js';
import { setQuery } from '../router.js';

const CLOSE_REASONS = [['false_positive', 'False positive'], ['true_positive', 'True positive'], ['duplicate', 'Duplicate'], ['other', 'Other']];
export const BLOCK_DURATIONS = [['1h', '1 hour'], ['24h', '24 hours'], ['7d', '7 days'], ['30d', '30 days']];
const FILTERS = ['severity', 'status', 'type', 'source_ip'];

const threatId = (threat) => threat.id || threat.threat_id;

function notesOf(threat) {
  return Array.isArray(threat.notes) ? threat.notes : [];
}

function threatCard(initial, fresh) {
  let threat = initial;
  const item = h('li', { dataset: { threatId: threatId(threat) } });

  async function change(body, done) {
    try {
      const updated = await patch(`/api/threats/${encodeURIComponent(threatId(threat))}`, body);
      threat = { ...threat, ...body, ...(updated && typeof updated === 'object' ? updated : {}) };
      draw();
      toast(done);
    } catch (error) {
      toast(`Not saved: ${error.message}`, 'error');
    }
  }

  function actions() {
    const id = threatId(threat);
    const closeReason = select('close_reason', CLOSE_REASONS, 'false_positive');
    const assignee = h('input', { name: 'assignee', value: threat.assignee || '', size: 12, placeholder: currentUser().username });
    const note = h('input', { name: 'note', size: 24, placeholder: 'What you found' });
    const duration = select('duration', BLOCK_DURATIONS, '24h');
    return h('div', { class: 'threat-actions' },
      threat.status === 'open'
        ? h('button', { type: 'button', class: 'btn small', onclick: () => change({ status: 'acknowledged' }, 'Acknowledged') }, 'Acknowledge')
        : null,
      threat.status !== 'closed'
        ? h('form', { class: 'inline', 'aria-label': `Close threat ${id}`, onsubmit: (event) => { event.preventDefault(); change({ status: 'closed', close_reason: closeReason.value }, 'Closed'); } },
          field('Close reason', closeReason), h('button', { type: 'submit', class: 'btn secondary small' }, 'Close'))
        : null,
      h('form', { class: 'inline', 'aria-label': `Assign threat ${id}`, onsubmit: (event) => { event.preventDefault(); change({ assignee: assignee.value.trim() || currentUser().username }, 'Assigned'); } },
        field('Assignee', assignee), h('button', { type: 'submit', class: 'btn secondary small' }, 'Assign')),
      h('form', {
        class: 'inline',
        'aria-label': `Add a note to threat ${id}`,
        onsubmit: async (event) => {
          event.preventDefault();
          if (!note.value.trim()) return;
          try {
            const updated = await post(`/api/threats/${encodeURIComponent(id)}/notes`, { text: note.value.trim() });
            const notes = updated && Array.isArray(updated.notes) ? updated.notes : [...notesOf(threat), { text: note.value.trim(), author: currentUser().username, at: new Date().toISOString() }];
            threat = { ...threat, notes };
            draw();
            toast('Note added');
          } catch (error) {
            toast(`Note not saved: ${error.message}`, 'error');
          }
        },
      }, field('Note', note), h('button', { type: 'submit', class: 'btn secondary small' }, 'Add note')),
      h('form', {
        class: 'inline',
        'aria-label': `Block ${threat.source_ip}`,
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await post('/api/firewall/block', { ip_address: threat.source_ip, duration: duration.value, reason: `${label(threat.threat_type)} (threat ${id})`, threat_id: id });
            toast(`Blocked ${threat.source_ip} for ${duration.value}`);
          } catch (error) {
            toast(`Not blocked: ${error.message}`, 'error');
          }
        },
      }, field('Block for', duration), h('button', { type: 'submit', class: 'btn danger small' }, `Block ${threat.source_ip}`)));
  }

  // A threat from the scorer says whether its evidence is handshake-verified (`verified` on the
  // live feed, in the metadata from the API); an analyst's manual entry says nothing (null).
  function verifiedOf(entry) {
    if (typeof entry.verified === 'boolean') return entry.verified;
    const facts = entry.metadata || entry.evidence || {};
    if (!('verified' in facts)) return null;
    return facts.verified === true || facts.verified === 'true';
  }

  function draw() {
    const sev = String(threat.severity || 'low').toLowerCase();
    item.className = `threat sev-border-${sev}${fresh ? ' fresh' : ''}`;
    fresh = false;
    const notes = notesOf(threat);
    replace(item,
      h('div', { class: 'threat-head' },
        severity(sev),
        h('span', { class: 'title' }, label(threat.threat_type)),
        verifiedOf(threat) === false
          ? h('span', { class: 'badge unverified', title: 'Not enough of its sessions completed a verified TCP handshake: the evidence may be forged by an off-path sender, so it is shown but never blocks automatically.' }, 'unverified')
          : null,
        h('span', { class: `status-${threat.status || 'open'}` }, text(threat.status || 'open'), threat.close_reason ? ` (${label(threat.close_reason)})` : ''),
        h('span', { class: 'muted', title: time(threat.timestamp || threat.detected_at) }, ago(threat.timestamp || threat.detected_at))),
      h('div', {}, text(threat.description)),
      h('div', { class: 'threat-meta' },
        h('span', {}, 'Source ', h('span', { class: 'mono' }, text(threat.source_ip))),
        h('span', {}, 'Target ', h('span', { class: 'mono' }, `${text(threat.target_ip)}${threat.target_port ? `:${threat.target_port}` : ''}`)),
        h('span', {}, `Risk ${num(threat.risk_score, 1)}`),
        threat.assignee ? h('span', {}, `Assigned to ${threat.assignee}`) : null,
        threat.session_id ? h('a', { href: `#/sessions/${encodeURIComponent(threat.session_id)}` }, 'Session') : null),
      notes.length ? h('ul', { class: 'notes' }, notes.map((entry) => h('li', {}, typeof entry === 'string' ? entry : `${text(entry.author || entry.username)}: ${text(entry.text || entry.note)}`))) : null,
      canAct() ? actions() : null);
  }
  draw();
  return item;
}

function matches(threat, filters) {
  return (!filters.severity || threat.severity === filters.severity)
    && (!filters.status || (threat.status || 'open') === filters.status)
    && (!filters.type || threat.threat_type === filters.type)
    && (!filters.source_ip || threat.source_ip === filters.source_ip);
}

export async function threatsView(ctx) {
  const filters = Object.fromEntries(FILTERS.map((key) => [key, ctx.query.get(key) || '']));
  const body = await get(`/api/threats${query({ ...filters, limit: 100 })}`);
  const threats = listOf(body, 'threats');
  const feed = h('ul', { class: 'feed', id: 'threat-feed', 'aria-live': 'polite' }, threats.map((threat) => threatCard(threat)));
  const empty = h('p', { class: 'muted', hidden: threats.length > 0 }, 'No threats match.');

  ctx.onCleanup(subscribe('threat_detected', (threat) => {
    if (!matches(threat, filters)) return;
    const id = threatId(threat);
    const existing = [...feed.children].find((child) => child.dataset.threatId === id);
    const card = threatCard({ status: 'open', ...threat, id }, true);
    if (existing) existing.replaceWith(card);
    else feed.prepend(card);
    empty.hidden = true;
  }));

  const form = h('form', {
    class: 'filters',
    'aria-label': 'Filter threats',
    onsubmit: (event) => {
      event.preventDefault();
      setQuery(Object.fromEntries(new FormData(event.target)));
    },
  },
  field('Severity', select('severity', ['', 'low', 'medium', 'high', 'critical'], filters.severity)),
  field('Status', select('status', ['', 'open', 'acknowledged', 'closed'], filters.status)),
  field('Type', h('input', { name: 'type', value: filters.type, placeholder: 'brute_force', size: 14 })),
  field('Source address', h('input', { name: 'source_ip', value: filters.source_ip, size: 16 })),
  h('button', { type: 'submit', class: 'btn' }, 'Apply'),
  h('button', { type: 'button', class: 'btn secondary', onclick: () => setQuery({}) }, 'Clear'));

  return h('div', {}, h('h1', {}, 'Threats'), form, empty, feed);
}
