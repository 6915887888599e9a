// Display formats shared by the views.
import { serverNow } from './api.js';
import { h } from './dom.js';

export function time(value) {
  if (!value) return '—';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

export function ago(value) {
  if (!value) return '—';
  const secs = Math.round((serverNow() - new Date(value).getTime()) / 1000);
  if (!Number.isFinite(secs)) return String(value);
  if (secs < 0) return 'just now';
  return `${duration(secs)} ago`;
}

export function duration(totalSecs) {
  const secs = Math.max(0, Math.floor(totalSecs));
  if (secs < 60) return `${secs}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins}m ${secs % 60}s`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours}h ${mins % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function num(value, digits = 0) {
  if (value === null || value === undefined || value === '') return '—';
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function text(value) {
  return value === null || value === undefined || value === '' ? '—' : String(value);
}

/** Risk band of a 0..100 score, matching the severity colours. */
export function band(score) {
  const n = Number(score) || 0;
  if (n >= 90) return 'critical';
  if (n >= 70) return 'high';
  if (n >= 40) return 'medium';
  return 'low';
}

export function risk(score) {
  const n = Math.max(0, Math.min(100, Number(score) || 0));
  const fill = h('span', { class: `bar-${band(n)}` });
  fill.style.width = `${n}%`;
  fill.style.background = `var(--${band(n)})`;
  return h('span', { class: 'risk' }, h('span', { class: 'meter', 'aria-hidden': 'true' }, fill), num(n, 1));
}

export function severity(value) {
  const sev = String(value || 'low').toLowerCase();
  return h('span', { class: `sev sev-${sev}` }, sev);
}

export function label(key) {
  return String(key).replaceAll('_', ' ');
}
