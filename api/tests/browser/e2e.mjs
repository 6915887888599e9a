// The dashboard in Debian's Chromium, driven by playwright-core. Run by api/tests/browser.rs,
// which starts Postgres, tansu, the pipeline and the API and passes them in the environment:
//   BASE_URL, SCENARIO (live | viewer | sessions_speed | first_start), SCREENSHOT_DIR, and the
//   accounts a scenario logs in with: ADMIN_USER/ADMIN_PASSWORD, ANALYST_USER/ANALYST_PASSWORD,
//   VIEWER_USER/VIEWER_PASSWORD. first_start (vncguard/tests/first_start.rs, the embedded mode
//   just started) also reads EXPECTED_SESSIONS and AGENT_ID.
// Protocol with the Rust side: a line `REPLAY` on stdout asks it to replay the brute-force capture
// through the pipeline; a line `RESULT {json}` reports figures. Any failure exits non-zero.
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE_URL = env('BASE_URL');
const SCENARIO = env('SCENARIO');
const SCREENSHOT_DIR = env('SCREENSHOT_DIR');
/** The account of `role`, from the environment. */
const account = (role) => [env(`${role.toUpperCase()}_USER`), env(`${role.toUpperCase()}_PASSWORD`)];
const WIDE = { width: 1280, height: 800 };
const NARROW = { width: 390, height: 844 };

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/**
 * Polls `probe` (run here in Node, so the page's Content Security Policy, which forbids eval,
 * stays as strict as in production) until it returns a truthy value.
 */
async function until(probe, message, timeout = 15000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const stdinLines = createInterface({ input: process.stdin });
const waiting = [];
stdinLines.on('line', (line) => waiting.shift()?.(line));
/** Ask the Rust side for something and wait for its one-line answer. */
function ask(request) {
  process.stdout.write(`${request}\n`);
  return new Promise((resolve) => waiting.push(resolve));
}

const profile = mkdtempSync(join(tmpdir(), 'vncguard-chromium-'));
// Under `VNCGUARD_CLOCK_OFFSET` (libfaketime) Chromium never finishes loading a page, so it keeps
// the real clock, as an analyst's browser with a wrong clock would: the dashboard reads the
// server's time from its responses, and these scenarios check what it shows with that skew.
const browserEnv = Object.fromEntries(Object.entries(process.env)
  .filter(([name]) => name !== 'LD_PRELOAD' && !name.startsWith('FAKETIME')));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  env: browserEnv,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: WIDE,
});
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(15000);
const consoleErrors = [];
page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));

mkdirSync(SCREENSHOT_DIR, { recursive: true });
// This scenario's screenshots of an earlier run (a failure's included) would mislead.
for (const file of readdirSync(SCREENSHOT_DIR)) {
  if (file.startsWith(`${SCENARIO}-`)) rmSync(join(SCREENSHOT_DIR, file));
}
async function shot(name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${SCENARIO}-${name}.png`), fullPage: true });
}
/** The page at 1280x800 and on a phone's width. */
async function shotWideAndNarrow(name) {
  await shot(name);
  await page.setViewportSize(NARROW);
  await shot(`${name}-narrow`);
  await page.setViewportSize(WIDE);
}

async function login(role) {
  const [username, password] = account(role);
  await page.goto(`${BASE_URL}/`);
  await page.getByLabel('User name').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#who-role').filter({ hasText: role }).waitFor();
  await page.locator('#active-sessions').waitFor();
}

async function go(hash, ready) {
  await page.evaluate((target) => { location.hash = target; }, hash);
  await page.locator(ready).first().waitFor();
}

/** A token from the API itself, for calls the dashboard would never make for this role. */
async function apiToken(role) {
  const [username, password] = account(role);
  const response = await fetch(`${BASE_URL}/api/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  check(response.ok, `API login of ${role} answers ${response.status}`);
  return (await response.json()).access_token;
}

async function callAs(token, method, path, body) {
  const response = await fetch(`${BASE_URL}${path}`, {
    method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return response.status;
}

const STATE_CHANGING = /^(Acknowledge|Close|Assign|Add note|Block|Unblock)/;
async function stateChangingControls() {
  const names = await page.locator('main button').allTextContents();
  return names.filter((name) => STATE_CHANGING.test(name.trim()));
}

async function live() {
  await page.goto(`${BASE_URL}/`);
  await page.getByLabel('User name').waitFor();
  await shotWideAndNarrow('login');
  await login('analyst');
  await page.locator('#live-state.on').waitFor();
  const threats24h = async () => Number((await page.textContent('#threats-24h')).replaceAll(/\D/g, '')) || 0;
  const before = await threats24h();
  await shot('overview-before');

  // The overview counts the threat live, without a reload.
  const answer = await ask('REPLAY');
  check(answer.startsWith('REPLAYED'), `replay answered ${answer}`);
  await until(async () => (await threats24h()) > before, 'the threats of the last 24 h to grow', 30000);
  await page.locator('#recent-threats li', { hasText: 'brute force' }).first().waitFor();
  // The charts follow too: the replayed sessions land in the risk histogram.
  const chartedSessions = async () => Number((await page.getAttribute('#risk-title ~ svg', 'aria-label')).match(/(\d+) in all/)[1]);
  await until(async () => (await chartedSessions()) > 0, 'the replayed sessions in the risk chart', 30000);
  await shotWideAndNarrow('overview-live');

  // Threats page: the brute force is there; acknowledge it and block its source from it.
  await page.getByRole('link', { name: 'Threats', exact: true }).click();
  const card = page.locator('#threat-feed > li', { hasText: 'brute force' }).first();
  await card.waitFor();
  const threatId = await card.getAttribute('data-threat-id');
  const sourceIp = (await card.locator('.threat-meta .mono').first().textContent()).trim();
  await card.getByRole('button', { name: 'Acknowledge' }).click();
  const acknowledged = page.locator(`#threat-feed > li[data-threat-id="${threatId}"]`);
  await acknowledged.locator('.status-acknowledged').waitFor();
  await acknowledged.getByLabel('Block for').selectOption('24h');
  await acknowledged.getByRole('button', { name: `Block ${sourceIp}` }).click();
  await page.locator('.toast', { hasText: `Blocked ${sourceIp}` }).waitFor();
  await shotWideAndNarrow('threats');
  // The confirmations go by themselves; the next pages are shot without them.
  await page.locator('.toast').first().waitFor({ state: 'detached', timeout: 10000 });
  await page.locator('.toast').last().waitFor({ state: 'detached', timeout: 10000 });

  // The threat's session, with its handshake and risk breakdown.
  await acknowledged.getByRole('link', { name: 'Session', exact: true }).click();
  await page.getByRole('heading', { name: 'Handshake' }).waitFor();
  check((await page.textContent('main')).includes('failed'), 'the session page shows the failed authentication');
  // The breakdown shows how the score shown was reached: the shares of the five components make
  // the composite, and the brute force's band (high or critical) places it at 70 or more.
  const shownRisk = Number((await page.textContent('.card .value')).match(/[\d.]+/)[0]);
  const shares = (await page.locator('.component .share').allTextContents()).map(Number);
  const composite = Number(await page.textContent('#risk-composite'));
  const breakdownTotal = Number(await page.textContent('#risk-total'));
  const band = await page.textContent('#risk-band');
  check(shares.length === 5, `five component shares, not ${shares.length}`);
  check(Math.abs(shares.reduce((a, b) => a + b, 0) - composite) < 0.3, `the shares ${shares} add up to the composite ${composite}`);
  check(/Worst finding: (high|critical) \(brute_force\)/.test(band), `the brute force sets the band: ${band}`);
  check(breakdownTotal >= 70, `a brute force scores 70 or more, not ${breakdownTotal}`);
  check(Math.abs(breakdownTotal - shownRisk) < 1, `the breakdown's total ${breakdownTotal} is the risk shown, ${shownRisk}`);
  await shotWideAndNarrow('session');

  await page.getByRole('link', { name: 'Sessions', exact: true }).click();
  await page.locator('#sessions-table tbody tr td a').first().waitFor();
  await shotWideAndNarrow('sessions');

  // The decision is on the firewall page with its time left.
  await page.getByRole('link', { name: 'Firewall', exact: true }).click();
  const rule = page.locator('#rules-table tbody tr', { hasText: sourceIp }).first();
  await rule.waitFor();
  const left = await rule.locator('td.countdown').textContent();
  check(/^2[34]h|^1d/.test(left.trim()), `time left of a 24 h block reads ${left}`);
  await shotWideAndNarrow('firewall');

  // The agent's heartbeat sent with the replay, through the sink.
  await page.getByRole('link', { name: 'Fleet and model', exact: true }).click();
  await page.locator('#agents-table tbody tr', { hasText: 'browser-test' }).waitFor();
  // The model the test announced, recorded by the sink.
  const model = (await page.textContent('#model-version')).trim();
  check(model.length > 1, `the current model has a version, not ${model}`);
  await shotWideAndNarrow('fleet');

  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('User name').waitFor();
  check(await page.locator('#topbar').isHidden(), 'the navigation is hidden after logout');
  return { threat_id: threatId, source_ip: sourceIp, time_left: left.trim() };
}

async function viewer() {
  // An analyst sees the controls on the same data, so their absence below means something.
  await login('analyst');
  await go('#/threats', '#threat-feed > li');
  const analystThreats = await stateChangingControls();
  await go('#/firewall', '#rules-table tbody tr');
  const analystFirewall = await stateChangingControls();
  check(analystThreats.length > 0 && analystFirewall.length > 0, `an analyst sees triage and block controls (${analystThreats}, ${analystFirewall})`);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('User name').waitFor();

  await login('viewer');
  const seen = {};
  for (const [hash, ready] of [['#/', '#active-sessions'], ['#/threats', '#threat-feed > li'], ['#/firewall', '#rules-table tbody tr'],
    ['#/sessions', '#sessions-table tbody tr'], ['#/fleet', '#agents-table']]) {
    await go(hash, ready);
    seen[hash] = await stateChangingControls();
    check(seen[hash].length === 0, `a viewer sees no state-changing control on ${hash}: ${seen[hash]}`);
    const blockForms = page.locator('main form').filter({ has: page.getByRole('button', { name: /^Block/ }) });
    check((await blockForms.count()) === 0, `no block form for a viewer on ${hash}`);
  }
  await go('#/threats', '#threat-feed > li');
  await shot('threats');
  await go('#/firewall', '#rules-table tbody tr');
  await shot('firewall');

  // The API refuses a viewer whatever the page shows.
  const token = await apiToken('viewer');
  const listed = await fetch(`${BASE_URL}/api/threats?limit=1`, { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.json());
  const threat = (listed.threats || listed)[0];
  check(threat, 'there is a threat to try triage on');
  const id = encodeURIComponent(threat.id);
  const refusals = {
    acknowledge: await callAs(token, 'PATCH', `/api/threats/${id}`, { status: 'acknowledged' }),
    close: await callAs(token, 'PATCH', `/api/threats/${id}`, { status: 'closed', close_reason: 'false_positive' }),
    assign: await callAs(token, 'PATCH', `/api/threats/${id}`, { assignee: 'viewer' }),
    note: await callAs(token, 'POST', `/api/threats/${id}/notes`, { text: 'not allowed' }),
    block: await callAs(token, 'POST', '/api/firewall/block', { ip_address: '198.51.100.77', duration: '1h', reason: 'viewer try' }),
    unblock: await callAs(token, 'POST', '/api/firewall/unblock', { ip_address: '198.51.100.77' }),
  };
  for (const [action, status] of Object.entries(refusals)) check(status === 403, `the API answers ${status} to a viewer's ${action}`);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('User name').waitFor();
  return { refusals, threat_id: threat.id };
}

async function sessionsSpeed() {
  await login('admin');
  const timings = [];
  for (let run = 0; run < 3; run += 1) {
    // A full load of the page (document, modules, token from the tab's storage, API call,
    // render): from a blank page, since a jump to another hash of the same document is no load.
    await page.goto('about:blank');
    const started = Date.now();
    await page.goto(`${BASE_URL}/#/sessions`);
    await page.locator('#sessions-table tbody tr td a').first().waitFor({ state: 'visible' });
    timings.push(Date.now() - started);
  }
  const rows = await page.locator('#sessions-table tbody tr').count();
  const caption = await page.textContent('#sessions-table caption');
  await shot('sessions-1m');
  const pageRisks = async () => (await page.locator('#sessions-table tbody tr td:last-child').allTextContents()).map((t) => Number(t.replaceAll(/[^\d.]/g, '')));
  const newestRisks = await pageRisks();
  // Sorting by risk and the next page, also on the full table.
  const sortStarted = Date.now();
  await page.getByRole('button', { name: /^Risk/ }).click();
  await page.waitForURL(/sort=-risk_score/);
  // The table drawn for the new order (its header marks the sort), not the one it replaces.
  await page.locator('#sessions-table th[aria-sort="descending"]', { hasText: 'Risk' }).waitFor();
  const sortMs = Date.now() - sortStarted;
  const risks = await pageRisks();
  // Whether the API honoured the sort: the risks down the page never increase, and none is
  // below the riskiest of the newest sessions' page.
  const sortedByRisk = risks.every((risk, i) => i === 0 || risk <= risks[i - 1]) && risks.at(-1) >= Math.max(...newestRisks);
  const nextStarted = Date.now();
  await page.getByRole('button', { name: 'Next →' }).click();
  await page.locator('.pager', { hasText: 'Page 2 of' }).waitFor();
  const nextMs = Date.now() - nextStarted;
  await shot('sessions-1m-sorted');
  timings.sort((a, b) => a - b);
  check(rows === 50, `the first page shows 50 rows, not ${rows}`);
  check(sortedByRisk, `the risk sort puts the riskiest first: ${risks} after ${newestRisks}`);
  check(timings[1] < 1000, `the first page of 1,000,000 sessions renders in under a second (median ${timings[1]} ms of ${timings})`);
  return { first_row_ms: timings, rows, caption, sort_ms: sortMs, sorted_by_risk: sortedByRisk, next_page_ms: nextMs };
}

// The embedded mode right after `./dev up`: its bundled samples are today's traffic on the
// overview, and its capture agent and the model it learned are on the fleet page.
async function firstStart() {
  const expected = Number(env('EXPECTED_SESSIONS'));
  const agentId = env('AGENT_ID');
  await login('admin');
  const chartedSessions = async () => Number((await page.getAttribute('#risk-title ~ svg', 'aria-label')).match(/(\d+) in all/)[1]);
  const charted = await until(async () => { const n = await chartedSessions(); return n >= expected ? n : 0; },
    `the ${expected} sample sessions in the risk chart`, 30000);
  check(charted === expected, `the risk chart counts the ${expected} sample sessions, not ${charted}`);
  check(!(await page.textContent('main')).includes('No session started'), 'the overview has sessions of the last 24 h');
  const threats = Number((await page.textContent('#threats-24h')).replaceAll(/\D/g, '')) || 0;
  check(threats > 0, 'the samples\' threats are counted in the last 24 h');
  await shotWideAndNarrow('overview');

  await page.getByRole('link', { name: 'Fleet and model', exact: true }).click();
  const row = page.locator('#agents-table tbody tr', { hasText: agentId });
  await row.waitFor();
  const agents = (await page.textContent('#agents-title')).trim();
  check(agents === 'Capture agents (1)', `the fleet lists the embedded agent: ${agents}`);
  const rowText = await row.textContent();
  check(!rowText.includes('stale'), `the embedded agent is not stale: ${rowText}`);
  // Its heartbeat counts what it replayed: every sample session (the table's Sessions column).
  const countedSessions = async () => Number((await row.locator('td').nth(9).textContent()).replaceAll(/\D/g, ''));
  await until(async () => {
    if ((await countedSessions()) === expected) return true;
    await page.reload();
    await row.waitFor();
    return false;
  }, `the embedded agent's heartbeat to count the ${expected} sample sessions`, 30000);
  // The model the scorer learned from the samples: its version, sessions and validation.
  const shownModel = (await page.textContent('#model-version')).trim();
  check(shownModel === env('MODEL_VERSION'), `the fleet page shows the learned model ${env('MODEL_VERSION')}, not ${shownModel}`);
  const trainingSessions = Number((await page.textContent('#model-sessions')).replaceAll(/\D/g, ''));
  check(trainingSessions > 0, `the model names its training sessions: ${trainingSessions}`);
  const validation = (await page.textContent('#model-validation')).trim();
  check(/^AUC /.test(validation) && /held-out normal/.test(validation), `the model shows its validation: ${validation}`);
  const window = (await page.textContent('#model-window')).trim();
  check(window.includes('–') && !window.startsWith('—'), `the model shows its training window: ${window}`);
  await shotWideAndNarrow('fleet');
  return { charted_sessions: charted, threats_24h: threats, agents, model: shownModel, training_sessions: trainingSessions, validation };
}

// An admin makes a CrowdSec bouncer key on the firewall page, sees it once, sees the bouncer's
// poll in the list, and revokes it: the decision stream answers the key until then, not after.
async function bouncers() {
  await login('admin');
  await go('#/firewall', '#bouncers-table');
  await page.getByLabel('Bouncer name').fill('fw-browser');
  await page.getByRole('button', { name: 'Make a key' }).click();
  const shown = page.locator('#bouncer-key-value');
  await shown.waitFor();
  const key = (await shown.textContent()).trim();
  check(/^[0-9a-f]{64}$/.test(key), `the new key is shown: ${key}`);
  await shotWideAndNarrow('bouncers');
  const poll = async () => (await fetch(`${BASE_URL}/v1/decisions/stream?startup=true`, {
    headers: { 'X-Api-Key': key, 'User-Agent': 'browser-test-bouncer/1' },
  })).status;
  const polled = await poll();
  check(polled === 200, `the stream answers the new key with ${polled}`);
  // A fresh load of the page: the poll is listed, and the key is shown nowhere any more.
  await page.reload();
  const row = page.locator('#bouncers-table tbody tr', { hasText: 'fw-browser' });
  await row.waitFor();
  const listed = (await row.textContent()).trim();
  check(listed.includes('browser-test-bouncer/1') && !listed.includes('never'), `the list shows the poll: ${listed}`);
  check(!(await page.textContent('main')).includes(key), 'the key is shown only once');
  await row.getByRole('button', { name: 'Revoke fw-browser' }).click();
  await row.waitFor({ state: 'detached' });
  const revoked = await poll();
  check(revoked === 403, `the stream answers the revoked key with ${revoked}`);
  return { polled, revoked, listed };
}

let result;
try {
  result = await ({ live, viewer, sessions_speed: sessionsSpeed, first_start: firstStart, bouncers })[SCENARIO]();
  check(consoleErrors.length === 0, `no console errors, got: ${consoleErrors.join(' | ')}`);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
} catch (error) {
  await shot('failure').catch(() => {});
  process.stderr.write(`${error.stack || error}\nconsole errors: ${consoleErrors.join(' | ')}\n`);
  process.exitCode = 1;
} finally {
  stdinLines.close();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
