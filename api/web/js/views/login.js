import { login } from '../api.js';
import { h } from '../dom.js';

export function loginView() {
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const message = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn' }, 'Log in');
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      message.textContent = '';
      try {
        await login(username.value.trim(), password.value);
      } catch (error) {
        message.textContent = error.status === 401 ? 'Wrong user name or password.' : `Login failed: ${error.message}`;
        submit.disabled = false;
        password.select();
      }
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'username' }, 'User name'), username),
  h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password'), password),
  submit,
  message);
  queueMicrotask(() => username.focus());
  return h('section', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'vncguard'),
    h('p', { class: 'muted' }, 'VNC session monitoring and response. Log in to continue.'),
    form);
}
