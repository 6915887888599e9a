// Fleet and model: each capture agent's last heartbeat and counters, the anomaly model in use
// (version, training window, sessions, validation) and the scorer's learning status.
import { get, listOf, serverNow } from '../api.js';
import { h } from '../dom.js';
import { ago, label, num, text, time } from '../format.js';

const STALE_SECS = 120;

function metricValue(value) {
  if (typeof value === 'number') return num(value, Number.isInteger(value) ? 0 : 4);
  if (value && typeof value === 'object') return JSON.stringify(value);
  return text(value);
}

export async function fleetView() {
  const [agentsBody, modelsBody] = await Promise.all([get('/api/agents'), get('/api/models')]);
  const agents = listOf(agentsBody, 'agents');
  const models = listOf(modelsBody, 'models');
  const current = (modelsBody && modelsBody.current) || models[0] || null;

  const agentRows = agents.map((agent) => {
    const stale = agent.stale ?? (serverNow() - new Date(agent.last_heartbeat).getTime()) / 1000 > STALE_SECS;
    return h('tr', {},
      h('td', {}, text(agent.agent_id)),
      h('td', {}, text(agent.hostname)),
      h('td', {}, text(agent.version)),
      h('td', { class: stale ? 'error' : '', title: time(agent.last_heartbeat) }, ago(agent.last_heartbeat), stale ? ' (stale)' : ''),
      h('td', { class: 'num' }, num(agent.packets)),
      h('td', { class: 'num' }, num(agent.bytes)),
      h('td', { class: 'num' }, num(agent.pcap_drops)),
      h('td', { class: 'num' }, num(agent.flows_active)),
      h('td', { class: 'num' }, num(agent.sessions_active)),
      h('td', { class: 'num' }, num(agent.sessions_total)),
      h('td', { class: 'num' }, num(agent.parse_errors)),
      h('td', {}, agent.enforcing ? 'yes' : 'no'));
  });

  const allMetrics = current && current.metrics && typeof current.metrics === 'object' ? current.metrics : {};
  // Shown above as facts of their own.
  const shownKeys = ['training_rows', 'validation_auc', 'validation_precision', 'validation_normal_sessions', 'validation_flagged_sessions'];
  const metrics = Object.entries(allMetrics).filter(([key]) => !shownKeys.includes(key));
  const learning = modelsBody && modelsBody.learning_status;
  const figure = (key) => (typeof allMetrics[key] === 'number' ? num(allMetrics[key], 3) : '—');
  const validation = `AUC ${figure('validation_auc')}, precision ${figure('validation_precision')} on `
    + `${num(allMetrics.validation_normal_sessions ?? 0)} held-out normal and ${num(allMetrics.validation_flagged_sessions ?? 0)} flagged sessions`;
  return h('div', {},
    h('h1', {}, 'Fleet and model'),
    h('section', { 'aria-labelledby': 'agents-title' },
      h('h2', { id: 'agents-title' }, `Capture agents (${agents.length})`),
      h('div', { class: 'table-wrap' }, h('table', { id: 'agents-table' },
        h('thead', {}, h('tr', {}, ['Agent', 'Host', 'Version', 'Last heartbeat', 'Packets', 'Bytes', 'Drops', 'Flows', 'Active', 'Sessions', 'Parse errors', 'Enforcing']
          .map((title, index) => h('th', { scope: 'col', class: index >= 4 && index <= 10 ? 'num' : '' }, title)))),
        h('tbody', {}, agentRows.length ? agentRows : h('tr', {}, h('td', { colspan: 12, class: 'muted' }, 'No agent has reported yet.')))))),
    h('div', { class: 'panels' },
      h('section', { class: 'panel', 'aria-labelledby': 'model-title' },
        h('h2', { id: 'model-title' }, 'Current model'),
        current
          ? h('dl', { class: 'facts' },
            h('dt', {}, 'Name'), h('dd', {}, text(current.name)),
            h('dt', {}, 'Version'), h('dd', { class: 'mono', id: 'model-version' }, text(current.version)),
            h('dt', {}, 'Trained'), h('dd', {}, time(current.created_at)),
            h('dt', {}, 'Training sessions'), h('dd', { id: 'model-sessions' }, num(current.training_rows)),
            h('dt', {}, 'Training window'), h('dd', { id: 'model-window' }, `${time(current.training_window_start)} – ${time(current.training_window_end)}`),
            h('dt', {}, 'Validation'), h('dd', { id: 'model-validation' }, validation),
            h('dt', {}, 'Learning'), h('dd', { id: 'model-learning' }, learning ? text(learning) : 'trained; retrains on schedule'),
            h('dt', {}, 'Features'), h('dd', {}, Array.isArray(current.feature_names) ? current.feature_names.length : '—'),
            ...metrics.flatMap(([key, value]) => [h('dt', {}, label(key)), h('dd', {}, metricValue(value))]))
          : h('p', { class: 'muted', id: 'model-learning' }, learning ? `No model yet: ${learning}.` : 'No model has been trained yet.')),
      h('section', { class: 'panel', 'aria-labelledby': 'history-title' },
        h('h2', { id: 'history-title' }, 'Model history'),
        models.length
          ? h('ol', {}, models.map((model) => h('li', {}, h('span', { class: 'mono' }, `${text(model.name)} ${text(model.version)}`), ` — ${time(model.created_at)}, ${num(model.training_rows)} rows`)))
          : h('p', { class: 'muted' }, 'None.'))));
}
