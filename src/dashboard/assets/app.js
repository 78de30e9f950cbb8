// ctp dashboard: core (API, routing, live events) and the Models and Tasks pages.
// Plain JS, no build step; model.js adds the Model and Version pages.
'use strict';
const $ = (s, el = document) => el.querySelector(s);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const enc = encodeURIComponent;
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? '–' : Number(v).toFixed(d);
// Local time as 2026-11-30 14:05:09 (sv-SE is ISO-like), without the date when it is today.
function when(t) {
  if (!t) return '–';
  const s = new Date(t).toLocaleString('sv-SE');
  return s.startsWith(new Date().toLocaleDateString('sv-SE')) ? s.slice(11) : s.slice(0, 16);
}
function dur(s) {
  if (s === null || s === undefined) return '–';
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  return h ? `${h}h ${String(m).padStart(2, '0')}m` : m ? `${m}m ${String(x).padStart(2, '0')}s` : `${x}s`;
}
const badge = (state) => `<span class="badge s-${esc(state)}">${esc(state)}</span>`;
const ACTIVE = ['RUNNING', 'QUEUED'];

// ---- auth: the token lives in localStorage; a cookie copy lets EventSource (no headers) read.
const token = () => localStorage.getItem('ctpToken') || '';
function setToken(t) {
  if (t) localStorage.setItem('ctpToken', t); else localStorage.removeItem('ctpToken');
  document.cookie = 'ctp_token=' + enc(t || '') + '; path=/; SameSite=Strict' + (t ? '' : '; max-age=0');
}
async function api(path, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = 'Bearer ' + token();
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method: opts.method || 'GET', headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const j = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) { const e = new Error(j.error || r.statusText); e.status = r.status; throw e; }
  return j;
}
function banner(msg) { const b = $('#banner'); b.hidden = !msg; b.textContent = msg || ''; }

// ---- page lifecycle: whatever a page opens (streams, timers) is closed when it is left.
let cleanup = [];
let me = null;
const onLeave = (f) => cleanup.push(f);
function every(ms, f) { const id = setInterval(f, Math.max(ms, 1000)); onLeave(() => clearInterval(id)); }

// ---- live task events (SSE). The browser reconnects by itself and sends Last-Event-ID;
// if the stream is refused outright we reopen it ourselves from the last seq seen.
const streams = new Map();
function liveDot() {
  const states = [...streams.values()].map((s) => s.es.readyState);
  $('#live').className = 'live' + (!states.length ? '' : states.every((x) => x === 1) ? ' on' : ' retry');
}
function follow(taskId, handlers) {
  if (streams.has(taskId)) return;
  const st = { seq: null, es: null, closed: false };
  const open = () => {
    const url = `/api/tasks/${enc(taskId)}/events` + (st.seq !== null ? `?after=${st.seq}` : '');
    const es = new EventSource(url);
    st.es = es;
    const on = (kind, f) => es.addEventListener(kind, (m) => {
      if (m.lastEventId) st.seq = Number(m.lastEventId);
      window.ctpEvents = (window.ctpEvents || 0) + 1;
      const d = JSON.parse(m.data);
      if (f) f(d[kind], d);
    });
    on('snapshot', handlers.snapshot); on('progress', handlers.progress); on('sync', handlers.sync);
    on('heartbeat'); on('log'); on('preempted', handlers.preempted);
    on('terminal', (t, d) => { stop(taskId); if (handlers.terminal) handlers.terminal(t, d); });
    es.onopen = liveDot;
    es.onerror = () => {
      liveDot();
      if (es.readyState === 2 && !st.closed) setTimeout(() => { if (!st.closed) open(); }, 3000);
    };
    liveDot();
  };
  streams.set(taskId, st);
  open();
}
function stop(taskId) {
  const st = streams.get(taskId);
  if (!st) return;
  st.closed = true; st.es.close(); streams.delete(taskId); liveDot();
}
function stopAll() { [...streams.keys()].forEach(stop); }

// ---- confirmation dialog (rollback, cancel): resolves to the reason, or null.
// Admin: the "Cancel" buttons of a task table (data-cancel = task id), with a confirmation;
// `then` runs after the request (both task lists use it).
function onCancelClick(table, then) {
  table.addEventListener('click', async (e) => {
    const id = e.target.dataset && e.target.dataset.cancel;
    if (!id) return;
    const ok = await confirmDialog({ title: 'Cancel task?', ok: 'Cancel task',
      text: `Task <span class="mono">${esc(id)}</span> stops at its next step; no version is made.` });
    if (ok === null) return;
    try { await api(`/api/tasks/${enc(id)}/cancel`, { method: 'POST', body: {} }); } catch (err) { banner(err.message); }
    then();
  });
}

function confirmDialog({ title, text, ok, reason }) {
  const d = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').innerHTML = text;
  $('#confirm-ok').textContent = ok;
  $('#confirm-reason-label').hidden = !reason;
  $('#confirm-reason').value = '';
  $('#confirm-err').textContent = '';
  return new Promise((resolve) => {
    const form = $('#confirm form');
    const done = (v) => { d.close(); $('#confirm-cancel').onclick = null; form.onsubmit = null; resolve(v); };
    $('#confirm-cancel').onclick = () => done(null);
    form.onsubmit = (e) => {
      e.preventDefault();
      const r = $('#confirm-reason').value.trim();
      if (reason && !r) { $('#confirm-err').textContent = 'Please give a reason.'; return; }
      done(r);
    };
    d.showModal();
    (reason ? $('#confirm-reason') : $('#confirm-ok')).focus();
  });
}

function sparkline(points) {
  const v = points.map((p) => p.rm).filter((x) => x !== null && x !== undefined);
  if (!v.length) return '<span class="muted">–</span>';
  const w = 120, h = 26, max = Math.max(...v, 1), n = v.length;
  const xy = v.map((y, i) => `${n === 1 ? w / 2 : (i * (w - 4)) / (n - 1) + 2},${h - 3 - (y / max) * (h - 6)}`);
  const last = xy[xy.length - 1].split(',');
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">` +
    `<polyline fill="none" stroke="#1f77b4" stroke-width="1.6" points="${xy.join(' ')}"/>` +
    `<circle cx="${last[0]}" cy="${last[1]}" r="2.4" fill="#1f77b4"/></svg> ${fmt(v[v.length - 1])}`;
}

// ---- Webhooks (a section of the Models page, only when some are configured)
async function webhooksSection() {
  const { webhooks } = await api('/api/webhooks');
  if (!webhooks.length) return '';
  const rows = webhooks.map((w) => `<tr><td class="mono">${esc(w.url)}</td>
    <td class="muted wrap">${esc(w.events.join(', '))}</td><td class="num">${w.pending}</td>
    <td class="num">${w.delivered}</td><td class="num">${w.dead ? `<span class="err">${w.dead}</span>` : 0}</td>
    <td class="wrap">${w.last_error ? `<span class="err">${esc(w.last_error)}</span> <span class="muted">${when(w.last_error_at)}</span>` : ''}</td></tr>`).join('');
  return `<h2>Webhooks</h2><table id="webhooks"><thead><tr><th>URL</th><th>Events</th>
    <th class="num">Pending</th><th class="num">Delivered</th><th class="num">Dead</th><th>Latest failure</th>
    </tr></thead><tbody>${rows}</tbody></table>`;
}

// ---- Models page
async function modelsPage() {
  const [{ models }, hooks] = await Promise.all([api('/api/models'), webhooksSection().catch(() => '')]);
  const rows = models.map((m) => {
    const t = m.last_task;
    return `<tr data-model="${esc(m.name)}">
      <td><a href="#/models/${enc(m.name)}">${esc(m.name)}</a> <span class="muted">${esc(m.preset)}</span></td>
      <td class="num head">${m.head === null ? '–' : 'v' + m.head}</td>
      <td class="num">${m.versions}${m.rejected ? ` <span class="badge b-rejected">${m.rejected} rejected</span>` : ''}</td>
      <td>${t ? `${badge(t.state)} ${esc(t.name)}` : '<span class="muted">none</span>'}</td>
      <td>${sparkline(m.union_rm)}</td></tr>`;
  }).join('');
  $('#main').innerHTML = `<h1>Models</h1>
    <p class="muted">Union Rm of each version along the head's lineage (root → head).</p>
    <table><thead><tr><th>Model</th><th class="num">Head</th><th class="num">Versions</th>
    <th>Last task</th><th>Union Rm</th></tr></thead><tbody>${rows ||
    '<tr><td colspan="5" class="muted">No models yet: submit a task with ctpctl.</td></tr>'}</tbody></table>${hooks}`;
  every(10000, () => { if (!document.hidden) modelsPage.refresh(); });
}
modelsPage.refresh = async () => {
  try { const keep = cleanup; cleanup = []; keep.forEach((f) => f()); await modelsPage(); banner(); } catch (e) { banner(e.message); }
};

// ---- Tasks page: a live list.
function lossText(losses) {
  const e = Object.entries(losses || {}).sort(([a], [b]) => (a !== 'total') - (b !== 'total') || a.localeCompare(b));
  return e.map(([k, v]) => `<span class="term"><b>${esc(k)}</b> ${fmt(v, 3)}</span>`).join('');
}
function progressCells(p, state) {
  const pct = p ? p.percent : (state === 'SUCCEEDED' ? 100 : 0);
  const step = p ? `${p.step}/${p.total_steps}` : '';
  return `<td><span class="bar"><div style="width:${Math.min(100, pct || 0)}%"></div></span>
      <span class="pct">${fmt(pct, 0)}% ${esc(step)}</span></td>
    <td class="num eta">${state === 'RUNNING' && p ? dur(p.eta_seconds) : '–'}</td>
    <td class="num">${p && state === 'RUNNING' ? fmt(p.samples_per_second, 1) : '–'}</td>
    <td class="losses wrap">${p && state === 'RUNNING' ? lossText(p.losses) : ''}</td>
    <td class="num" title="${p && p.drift != null ? `drift ${fmt(p.drift, 4)} at the latest check` : ''}">${p ? p.momentum_syncs : '–'}${p && p.drift != null && state === 'RUNNING' ? ` <span class="drift">d ${fmt(p.drift, 3)}</span>` : ''}</td>`;
}
function taskRow(t) {
  const p = t.progress;
  const cancel = me.admin && ACTIVE.includes(t.state) && !t.cancel_requested
    ? `<button class="admin danger" data-cancel="${esc(t.id)}">Cancel…</button>` : '';
  const ver = t.produced_version ? `<a href="#/models/${enc(t.model)}/versions/${t.produced_version}">v${t.produced_version}</a>` : '';
  return `<tr data-task="${esc(t.id)}" data-state="${esc(t.state)}" data-step="${p ? p.step : 0}">
    <td><a href="#/models/${enc(t.model)}">${esc(t.model)}</a> / ${esc(t.name)}
      <div class="muted mono" title="${esc(t.id)}">${esc(t.id.slice(0, 8))}</div></td>
    <td>${badge(t.state)}${t.cancel_requested && t.state === 'RUNNING' ? ' <span class="muted">cancelling</span>' : ''}
      ${t.priority && t.priority !== 'normal' ? ` <span class="badge prio-${esc(t.priority)}" title="priority">${esc(t.priority)}</span>` : ''}
      ${t.preemptions ? ` <span class="muted preempted" title="times higher-priority work preempted it">preempted ×${t.preemptions}</span>` : ''}
      ${t.rejection_reason ? ' <span class="badge b-rejected" title="' + esc(t.rejection_reason) + '">gate: rejected</span>' : ''}
      ${t.error ? `<div class="err wrap">${esc(t.error)}</div>` : ''}</td>
    ${progressCells(p, t.state)}
    <td>${ver}</td><td class="muted">${when(t.created_at)}</td><td>${cancel}</td></tr>`;
}
// Latest streamed progress per task: a list re-read from the store may lag behind it.
const latest = new Map();
function updateTaskRow(id, p, state) {
  const seen = latest.get(id);
  if (!seen || p.step >= seen.step) latest.set(id, p); else p = seen;
  const tr = document.querySelector(`tr[data-task="${CSS.escape(id)}"]`);
  if (!tr) return;
  if (state) tr.dataset.state = state;
  tr.dataset.step = p.step;
  const cells = tr.children;
  const tmp = document.createElement('tbody');
  tmp.innerHTML = `<tr>${progressCells(p, tr.dataset.state)}</tr>`;
  [...tmp.firstChild.children].forEach((c, i) => cells[2 + i].replaceWith(c));
}
async function tasksPage() {
  $('#main').innerHTML = `<h1>Tasks</h1><p class="muted">Live: progress streams from the daemon as it trains.</p>
    <table id="tasks"><thead><tr><th>Task</th><th>State</th><th>Progress</th><th class="num">ETA</th>
    <th class="num">samples/s</th><th>Loss terms</th><th class="num">Syncs</th><th>Version</th><th>Created</th><th></th>
    </tr></thead><tbody></tbody></table>`;
  let pending = null;
  const load = async () => {
    try {
      const { tasks } = await api('/api/tasks?limit=100');
      $('#tasks tbody').innerHTML = tasks.map(taskRow).join('') ||
        '<tr><td colspan="10" class="muted">No tasks yet.</td></tr>';
      for (const t of tasks) if (t.state === 'RUNNING' && latest.has(t.id)) updateTaskRow(t.id, t.progress || latest.get(t.id));
      for (const t of tasks.filter((t) => ACTIVE.includes(t.state))) {
        follow(t.id, {
          snapshot: (s) => s.progress && updateTaskRow(s.id, s.progress, s.state),
          progress: (p) => updateTaskRow(t.id, p, 'RUNNING'),
          preempted: () => soon(),
          terminal: () => soon(),
        });
      }
      banner();
    } catch (e) { banner('Cannot reach the daemon: ' + e.message + ' (retrying)'); }
  };
  const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 1000); };
  onLeave(() => clearTimeout(pending));
  onCancelClick($('#tasks'), soon);
  await load();
  every(5000, () => { if (!document.hidden) load(); });
}

// ---- routing
function loginPage(msg) {
  $('#whoami').textContent = '';
  $('#main').innerHTML = `<div class="login"><h1>Sign in</h1>
    <p class="muted">This daemon requires a bearer token (the same as for gRPC). A read token
    shows everything; an admin token also allows rollback and cancel.</p>
    <p class="err">${esc(msg)}</p><input id="token" type="password" placeholder="token">
    <button id="signin">Sign in</button></div>`;
  $('#signin').onclick = () => { setToken($('#token').value.trim()); route(); };
}
const routes = [
  [/^#?\/?(models)?$/, modelsPage],
  [/^#\/tasks$/, tasksPage],
  [/^#\/models\/([^/]+)$/, (m) => window.modelPage(m)],
  [/^#\/models\/([^/]+)\/versions\/(\d+)$/, (m, v) => window.versionPage(m, Number(v))],
];
async function route() {
  const keep = cleanup; cleanup = []; keep.forEach((f) => f()); stopAll();
  const hash = location.hash;
  document.querySelectorAll('nav a').forEach((a) =>
    a.classList.toggle('on', (hash || '#/models').startsWith('#/' + a.dataset.nav)));
  try {
    me = await api('/api/whoami');
    $('#whoami').innerHTML = `${esc(me.name)} · ${esc(me.scope)}` +
      (me.auth ? ' <button id="signout">Sign out</button>' : '');
    if (me.auth) $('#signout').onclick = () => { setToken(''); route(); };
    for (const [re, page] of routes) {
      const m = hash.match(re);
      if (m) { await page(...m.slice(1).filter((x) => x !== undefined && x !== 'models').map(decodeURIComponent)); banner(); return; }
    }
    $('#main').innerHTML = '<p>Not found. <a href="#/models">Models</a></p>';
  } catch (e) {
    if (e.status === 401) loginPage(e.message);
    else { banner(e.message); $('#main').innerHTML = `<p class="err">${esc(e.message)}</p>`; }
  }
}
window.ctp = { setToken, route, api };
window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', route);
