// Firewall: the decisions in force with a live countdown, and block / unblock for analysts.
import { canAct, get, isAdmin, listOf, post, serverNow } from '../api.js';
import { h, field, select, toast, replace } from '../dom.js';
import { duration, text, time } from '../format.js';
import { subscribe } from '../live.js';
import { BLOCK_DURATIONS } from './threats.js';
import { bouncersPanel } from './bouncers.js';

const ruleId = (rule) => rule.decision_id || rule.id;
const ruleTarget = (rule) => rule.value || rule.source_ip || rule.ip_address;
const ruleUntil = (rule) => rule.until || rule.expires_at;

function timeLeft(rule) {
  const secs = (new Date(ruleUntil(rule)).getTime() - serverNow()) / 1000;
  return Number.isFinite(secs) ? (secs > 0 ? duration(secs) : 'expired') : '—';
}

export async function firewallView(ctx) {
  const tbody = h('tbody', {});
  const actor = canAct();
  let rules = [];

  async function unblock(rule) {
    try {
      await post('/api/firewall/unblock', { decision_id: ruleId(rule) });
      toast(`Unblocked ${ruleTarget(rule)}`);
      await load();
    } catch (error) {
      toast(`Not unblocked: ${error.message}`, 'error');
    }
  }

  function draw() {
    replace(tbody, ...(rules.length ? rules.map((rule) => h('tr', { dataset: { decisionId: ruleId(rule) } },
      h('td', { class: 'mono' }, text(ruleTarget(rule))),
      h('td', {}, text(rule.action)),
      h('td', {}, text(rule.origin)),
      h('td', { class: 'wrap' }, text(rule.reason)),
      h('td', { class: 'hide-narrow' }, time(rule.created_at)),
      h('td', { class: 'countdown', dataset: { until: ruleUntil(rule) } }, timeLeft(rule)),
      h('td', { class: 'hide-narrow' }, text(rule.created_by)),
      h('td', { class: 'hide-narrow' }, rule.dry_run ? 'dry run' : 'enforced'),
      actor ? h('td', {}, h('button', { type: 'button', class: 'btn secondary small', onclick: () => unblock(rule) }, `Unblock ${ruleTarget(rule)}`)) : null))
      : [h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No decisions in force.'))]));
  }

  async function load() {
    rules = listOf(await get('/api/firewall/rules'), 'rules');
    if (ctx.isCurrent()) draw();
  }
  await load();

  const ticker = setInterval(() => {
    for (const cell of tbody.querySelectorAll('td.countdown')) cell.textContent = timeLeft({ until: cell.dataset.until });
  }, 1000);
  ctx.onCleanup(() => clearInterval(ticker));
  ctx.onCleanup(subscribe('firewall_action', () => load().catch(() => {})));

  const address = h('input', { name: 'ip_address', required: true, placeholder: '203.0.113.7 or 198.51.100.0/24', size: 22 });
  const reason = h('input', { name: 'reason', required: true, placeholder: 'Why', size: 28 });
  const length = select('duration', BLOCK_DURATIONS, '24h');
  const blockForm = actor ? h('section', { class: 'panel', 'aria-labelledby': 'block-title' },
    h('h2', { id: 'block-title' }, 'Block an address'),
    h('form', {
      class: 'inline',
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await post('/api/firewall/block', { ip_address: address.value.trim(), duration: length.value, reason: reason.value.trim() });
          toast(`Blocked ${address.value.trim()}`);
          address.value = '';
          reason.value = '';
          await load();
        } catch (error) {
          toast(`Not blocked: ${error.message}`, 'error');
        }
      },
    }, field('Address or CIDR', address), field('Duration', length), field('Reason', reason), h('button', { type: 'submit', class: 'btn danger' }, 'Block'))) : null;

  const bouncers = isAdmin() ? await bouncersPanel(ctx) : null;

  return h('div', {},
    h('h1', {}, 'Firewall'),
    blockForm,
    h('h2', {}, 'Decisions in force'),
    h('div', { class: 'table-wrap' }, h('table', { id: 'rules-table' },
      h('thead', {}, h('tr', {},
        [['Address'], ['Action'], ['Origin'], ['Reason'], ['Created', 'hide-narrow'], ['Time left'], ['By', 'hide-narrow'], ['Mode', 'hide-narrow']]
          .map(([title, cls]) => h('th', { scope: 'col', class: cls }, title)),
        actor ? h('th', { scope: 'col' }, h('span', { class: 'muted' }, 'Unblock')) : null)),
      tbody)),
    bouncers);
}
