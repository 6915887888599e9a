// CrowdSec bouncers (admins only, on the firewall page): the keys that let a bouncer read the
// decision stream, when each last polled and from where, a new key shown once, and revocation.
import { del, get, listOf, post } from '../api.js';
import { h, field, toast, replace } from '../dom.js';
import { ago, text, time } from '../format.js';

export async function bouncersPanel(ctx) {
  const tbody = h('tbody', {});
  const shown = h('div', { id: 'bouncer-key', role: 'status' });
  let bouncers = [];

  async function revoke(bouncer) {
    try {
      await del(`/api/bouncers/${encodeURIComponent(bouncer.id)}`);
      toast(`Revoked ${bouncer.name}`);
      replace(shown);
      await load();
    } catch (error) {
      toast(`Not revoked: ${error.message}`, 'error');
    }
  }

  function draw() {
    replace(tbody, ...(bouncers.length ? bouncers.map((bouncer) => h('tr', { dataset: { bouncerId: bouncer.id } },
      h('td', { class: 'mono' }, text(bouncer.name)),
      h('td', { class: 'hide-narrow' }, time(bouncer.created_at)),
      h('td', {}, bouncer.last_pull ? ago(bouncer.last_pull) : 'never'),
      h('td', { class: 'mono' }, text(bouncer.last_ip)),
      h('td', { class: 'hide-narrow' }, text(bouncer.user_agent)),
      h('td', {}, h('button', { type: 'button', class: 'btn secondary small', onclick: () => revoke(bouncer) }, `Revoke ${bouncer.name}`))))
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No bouncers.'))]));
  }

  async function load() {
    bouncers = listOf(await get('/api/bouncers'), 'bouncers');
    if (ctx.isCurrent()) draw();
  }
  await load();
  // Last polls move every few seconds; refresh the list while the page is open.
  const ticker = setInterval(() => load().catch(() => {}), 10000);
  ctx.onCleanup(() => clearInterval(ticker));

  const name = h('input', { name: 'bouncer_name', required: true, placeholder: 'fw-edge-1', size: 20, pattern: '[A-Za-z0-9._@\\-]{1,64}' });
  const form = h('form', {
    class: 'inline',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const created = await post('/api/bouncers', { name: name.value.trim() });
        replace(shown, h('p', {}, `API key of ${created.name}, shown this once: put it in the bouncer's `, h('code', {}, 'api_key'), '.'),
          h('p', {}, h('code', { class: 'mono', id: 'bouncer-key-value' }, created.api_key)));
        name.value = '';
        await load();
      } catch (error) {
        toast(`No key made: ${error.message}`, 'error');
      }
    },
  }, field('Bouncer name', name), h('button', { type: 'submit', class: 'btn' }, 'Make a key'));

  return h('section', { class: 'panel', 'aria-labelledby': 'bouncers-title' },
    h('h2', { id: 'bouncers-title' }, 'CrowdSec bouncers'),
    h('p', { class: 'muted' }, 'Bouncers poll ', h('code', {}, '/v1/decisions/stream'), ' with their key and enforce the blocks above. A key reads decisions and nothing else.'),
    form,
    shown,
    h('div', { class: 'table-wrap' }, h('table', { id: 'bouncers-table' },
      h('thead', {}, h('tr', {},
        [['Name'], ['Created', 'hide-narrow'], ['Last poll'], ['Last address'], ['Version', 'hide-narrow'], ['Revoke']]
          .map(([title, cls]) => h('th', { scope: 'col', class: cls }, title)))),
      tbody)));
}
