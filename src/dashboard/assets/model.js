// ctp dashboard: the Model page (version tree, charts, audit) and the Version page.
'use strict';

const isRejected = (v) => v.state === 'rejected';

// The head's lineage (root → head), for "off lineage" marks.
function lineageOf(versions) {
  const by = new Map(versions.map((v) => [v.version, v]));
  const out = new Set();
  let cur = versions.find((v) => v.is_head);
  while (cur && !out.has(cur.version)) { out.add(cur.version); cur = by.get(cur.parent); }
  return out;
}

function versionNode(m, v, lineage, head) {
  const u = v.union_eval ? fmt(v.union_eval.rm) : '–';
  const marks = [
    v.is_head ? '<span class="badge b-head">HEAD</span>' : '',
    isRejected(v) ? `<span class="badge b-rejected" title="${esc(v.rejection_reason)}">REJECTED</span>` : '',
    !lineage.has(v.version) && !isRejected(v) ? '<span class="badge b-off">rolled back</span>' : '',
  ].join(' ');
  const act = me.admin && !v.is_head
    ? `<button class="admin" data-rollback="${v.version}" data-head="${head ?? ''}">Make head…</button>` : '';
  return `<span class="node${v.is_head ? ' head' : ''}${lineage.has(v.version) ? '' : ' off'}" data-version="${v.version}">
    <a href="#/models/${enc(m)}/versions/${v.version}"><b>v${v.version}</b></a>
    <span>${esc(v.task_name)}</span><span class="muted">union Rm ${u} · avg forgetting ${fmt(v.average_forgetting, 2)}</span>
    ${marks} ${act}</span>`;
}

function tree(m, versions, head) {
  const lineage = lineageOf(versions);
  const kids = new Map();
  for (const v of versions) {
    const k = v.parent ?? 0;
    if (!kids.has(k)) kids.set(k, []);
    kids.get(k).push(v);
  }
  const known = new Set(versions.map((v) => v.version));
  const roots = versions.filter((v) => v.parent === null || !known.has(v.parent));
  const render = (list, root) => `<ul class="tree${root ? ' root' : ''}">${list.map((v) =>
    `<li>${versionNode(m, v, lineage, head)}${kids.has(v.version) ? render(kids.get(v.version), false) : ''}</li>`).join('')}</ul>`;
  return render(roots, true);
}

async function rollbackFlow(m, version, head) {
  const reason = await confirmDialog({
    title: `Make v${version} the head of ${m}?`, ok: 'Roll back', reason: true,
    text: `The head moves from <b>v${head}</b> to <b>v${version}</b> only if it is still v${head}
      (expected_head). The next task trains from v${version}.`,
  });
  if (reason === null) return;
  try {
    await api(`/api/models/${enc(m)}/rollback`, { method: 'POST',
      body: { version, expected_head: head === '' ? null : Number(head), reason } });
    banner();
  } catch (e) { banner('Rollback refused: ' + e.message); }
  await route();
}

async function loadCharts(m) {
  const el = $('#charts');
  try {
    const { charts } = await api(`/api/models/${enc(m)}/charts`);
    const titles = { heatmap: 'Accuracy matrix (Rm %)', forgetting: 'Forgetting curves',
      syncs: 'Drift and momentum syncs', losses: 'Loss curves per task' };
    el.innerHTML = charts.map((c) => `<div class="chart" data-chart="${esc(c.name)}">${c.svg
      ? `<img alt="${esc(titles[c.name])}" src="data:image/svg+xml;charset=utf-8,${enc(c.svg)}">`
      : `<p class="err">${esc(titles[c.name])}: ${esc(c.error)}</p>`}</div>`).join('') ||
      '<p class="muted">No versions yet.</p>';
  } catch (e) { el.innerHTML = `<p class="err">${esc(e.message)}</p>`; }
}

window.modelPage = async function modelPage(m) {
  const d = await api(`/api/models/${enc(m)}`);
  const head = d.head;
  const hv = d.versions.find((v) => v.is_head);
  const running = d.tasks.filter((t) => ACTIVE.includes(t.state));
  const audit = d.head_history.slice().reverse().map((h) => `<tr>
    <td>${when(h.at)}</td><td>${esc(h.who)}</td><td>${h.from === null ? '–' : 'v' + h.from} → v${h.to}</td>
    <td class="wrap">${esc(h.reason)}</td></tr>`).join('');
  const tasks = d.tasks.slice().reverse().slice(0, 20).map(taskRow).join('');
  // Anchor suites (docs/anchors.md): a column and a curve (Rm over versions) per suite.
  const suites = [...new Set(d.versions.flatMap((v) => (v.anchors || []).map((a) => a.suite)))];
  const anchorRm = (v, s) => ((v.anchors || []).find((a) => a.suite === s) || { rm: null }).rm;
  const anchors = suites.length ? `<h2>Anchor suites (Rm)</h2>
    <table id="anchors"><thead><tr><th>Version</th>${suites.map((s) => `<th class="num">${esc(s)}</th>`).join('')}</tr></thead><tbody>
    <tr><td class="muted">curve</td>${suites.map((s) => `<td>${sparkline(d.versions.map((v) => ({ rm: anchorRm(v, s) })))}</td>`).join('')}</tr>
    ${d.versions.map((v) => `<tr><td>v${v.version}</td>${suites.map((s) => `<td class="num">${fmt(anchorRm(v, s))}</td>`).join('')}</tr>`).join('')}
    </tbody></table>` : '';
  $('#main').innerHTML = `<h1>${esc(m)}</h1>
    <div class="cards">
      <div class="card"><div class="k">Head</div><div class="v" id="head">${head === null ? '–' : 'v' + head}</div></div>
      <div class="card"><div class="k">Versions</div><div class="v">${d.versions.length}</div></div>
      <div class="card"><div class="k">Union Rm (head)</div><div class="v">${fmt(hv && hv.union_eval && hv.union_eval.rm)}</div></div>
      <div class="card"><div class="k">Avg forgetting (head)</div><div class="v">${fmt(hv && hv.average_forgetting, 2)}</div></div>
      <div class="card"><div class="k">Active tasks</div><div class="v">${running.length}</div></div>
    </div>
    <h2>Version tree</h2><div id="tree">${d.versions.length ? tree(m, d.versions, head) : '<p class="muted">No versions yet.</p>'}</div>
    ${anchors}
    <h2>Charts</h2><div class="charts" id="charts"><p class="muted">Drawing…</p></div>
    <h2>Head history</h2>
    <table id="audit"><thead><tr><th>When</th><th>Who</th><th>Change</th><th>Why</th></tr></thead>
    <tbody>${audit || '<tr><td colspan="4" class="muted">No head changes yet.</td></tr>'}</tbody></table>
    <h2>Tasks</h2>
    <table id="tasks"><thead><tr><th>Task</th><th>State</th><th>Progress</th><th class="num">ETA</th>
    <th class="num">samples/s</th><th>Loss terms</th><th class="num">Syncs</th><th>Version</th><th>Created</th><th></th>
    </tr></thead><tbody>${tasks}</tbody></table>`;
  $('#tree').addEventListener('click', (e) => {
    const b = e.target.dataset;
    if (b && b.rollback) rollbackFlow(m, Number(b.rollback), b.head);
  });
  onCancelClick($('#tasks'), route);
  // A running task updates its row live; when it ends the page reloads (new version).
  for (const t of running) {
    follow(t.id, {
      snapshot: (s) => s.progress && updateTaskRow(s.id, s.progress, s.state),
      progress: (p) => updateTaskRow(t.id, p, 'RUNNING'),
      terminal: () => setTimeout(route, 1000),
    });
  }
  loadCharts(m);
};

window.versionPage = async function versionPage(m, n) {
  const { version: v, task: t, engine } = await api(`/api/models/${enc(m)}/versions/${n}`);
  const f = v.forgetting || {};
  const evalRow = (e, union) => `<tr${union ? ' class="union"' : ''}><td>${union ? '<b>union</b>' : esc(e.task_name)}</td>
    ${['tr1', 'tr5', 'tr10', 'ir1', 'ir5', 'ir10'].map((k) => `<td class="num">${fmt(e[k])}</td>`).join('')}
    <td class="num"><b>${fmt(e.rm)}</b></td><td class="num">${union ? fmt(v.average_forgetting, 2) : fmt(f[e.task_id], 2)}</td></tr>`;
  const s = t.settings || {};
  const w = s.loss_weights || {};
  const r = s.replay || {};
  const kv = [
    ['Method', s.method], ['BatchNorm policy', s.bn_policy], ['Epochs', s.epochs], ['Batch size', s.batch_size],
    ['Learning rate', s.learning_rate], ['Drift threshold / check every', `${s.drift_threshold ?? '–'} / ${s.drift_check_every ?? '–'}`],
    ['Loss weights', Object.entries(w).filter(([, x]) => x !== null).map(([k, x]) => `${k} ${x}`).join(', ') || 'defaults (1)'],
    ['Replay', r.samples_per_task ? `${r.samples_per_task} per task` : r.batch_fraction ? `${r.batch_fraction} of each batch` : 'off'],
    ['Seed', t.seed], ['Samples (train / eval)', `${t.n_train} / ${t.n_eval}`],
    v.precision ? ['Precision / device', `${v.precision} / ${v.device}`]
      : ['Precision / device (this daemon; not recorded on this version)', `${engine.precision} / ${engine.device}`],
  ].map(([k, x]) => `<tr><td>${esc(k)}</td><td>${esc(x ?? '–')}</td></tr>`).join('');
  const act = me.admin && !v.is_head
    ? `<button class="admin" id="make-head">Make head…</button>` : '';
  $('#main').innerHTML = `<p><a href="#/models/${enc(m)}">← ${esc(m)}</a></p>
    <h1>${esc(m)} v${v.version} ${v.is_head ? '<span class="badge b-head">HEAD</span>' : ''}
      ${isRejected(v) ? '<span class="badge b-rejected">REJECTED</span>' : ''} ${act}</h1>
    ${isRejected(v) ? `<p class="err">Promotion gate: ${esc(v.rejection_reason)}</p>` : ''}
    <div class="split"><div><h2>Version</h2><table class="kv"><tbody>
      <tr><td>Parent</td><td>${v.parent === null ? 'none (first version)' : `<a href="#/models/${enc(m)}/versions/${v.parent}">v${v.parent}</a>`}</td></tr>
      <tr><td>Task</td><td>${esc(t.name)} <span class="muted mono">${esc(t.id)}</span> ${badge(t.state)}</td></tr>
      <tr><td>Created</td><td>${when(v.created_at)}</td></tr>
      <tr><td>Checkpoint sha256</td><td class="mono" id="sha">${esc(v.checkpoint_sha256)}</td></tr>
      <tr><td>Momentum syncs / steps</td><td>${v.momentum_syncs} / ${v.momentum_steps}</td></tr>
      <tr><td>BWT</td><td>${fmt(v.bwt, 2)}</td></tr>
    </tbody></table></div>
    <div><h2>Trained with</h2><table class="kv"><tbody>${kv}</tbody></table></div></div>
    <h2>Evaluation</h2>
    <table id="evals" class="fit"><thead><tr><th>Task</th><th class="num">TR@1</th><th class="num">TR@5</th><th class="num">TR@10</th>
      <th class="num">IR@1</th><th class="num">IR@5</th><th class="num">IR@10</th><th class="num">Rm</th><th class="num">Forgetting</th></tr></thead>
    <tbody>${v.evals.map((e) => evalRow(e, false)).join('')}${v.union_eval ? evalRow(v.union_eval, true) : ''}</tbody></table>`;
  if (act) {
    const d = await api(`/api/models/${enc(m)}`);
    $('#make-head').onclick = () => rollbackFlow(m, v.version, d.head === null ? '' : String(d.head));
  }
};
