// Outpost fleet page: appliances by cluster with health, load, bytes served, drive usage and
// titles held, fill progress, and requests per second per appliance over the last minutes.
// Reads only the control plane's fleet API.
'use strict';

const HISTORY_SECS = 300;
const COLORS = ['#0b6bcb', '#d92d20', '#079455', '#dc6803', '#7a5af8', '#0e9384', '#c11574', '#475467'];
const fleetState = { series: {}, last: {}, snapshot: null };
window.outpostFleet = fleetState;

const fmtBytes = (n) => {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

async function poll() {
  const res = await fetch('/v1/fleet');
  if (!res.ok) throw new Error(`GET /v1/fleet: ${res.status}`);
  const fleet = await res.json();
  fleetState.snapshot = fleet;
  const now = fleet.now || Date.now() / 1000;
  for (const a of fleet.appliances) {
    // Prefer the control plane's own per-appliance history when it has one.
    if (Array.isArray(a.rps_history) && a.rps_history.length) {
      fleetState.series[a.id] = a.rps_history.map(([t, v]) => ({ t, v }));
      continue;
    }
    const prev = fleetState.last[a.id];
    const s = (fleetState.series[a.id] = fleetState.series[a.id] || []);
    if (prev && now > prev.t) s.push({ t: now, v: Math.max(0, (a.requests_served - prev.n) / (now - prev.t)) });
    fleetState.last[a.id] = { t: now, n: a.requests_served };
    while (s.length && s[0].t < now - HISTORY_SECS) s.shift();
  }
  render(fleet);
  renderBgp(fleet);
  draw(now);
}

// One appliance's fill, as its fleet agent reported it: pending titles, bytes and files fetched
// and verified, verification failures, and whether the control plane was unreachable.
function fillText(f) {
  if (!f) return '–';
  const parts = [f.titles_pending ? `${f.titles_pending} pending` : 'complete'];
  if (f.bytes_filled) parts.push(`${fmtBytes(f.bytes_filled)} in ${f.files_verified} verified files`);
  if (f.rate_bps) parts.push(`${(f.rate_bps / 1e6).toFixed(1)} Mb/s`);
  if (f.verify_failures) parts.push(`${f.verify_failures} failed verification`);
  if (!f.in_window) parts.push('outside window');
  if (f.control_plane_unreachable_secs) parts.push(`control plane unreachable ${f.control_plane_unreachable_secs} s`);
  return parts.join(' · ');
}

function render(fleet) {
  const body = document.querySelector('#fleet tbody');
  body.textContent = '';
  const rows = [...fleet.appliances].sort((a, b) => (a.cluster + a.id).localeCompare(b.cluster + b.id));
  for (const a of rows) {
    const tr = body.insertRow();
    tr.dataset.id = a.id;
    const used = a.drives.reduce((s, d) => s + d.used_bytes, 0);
    const cap = a.drives.reduce((s, d) => s + d.capacity_bytes, 0);
    const cells = [
      `${a.cluster} (${a.cluster_kind})`, a.id, a.online ? a.health : (a.unavailable || 'offline'),
      `${Math.round((a.load || 0) * 100)}%`, a.requests_served, fmtBytes(a.bytes_served),
      `${a.drives.length} · ${fmtBytes(used)} of ${fmtBytes(cap)}`, (a.titles || []).join(', ') || '–',
      fillText(a.fill),
      a.last_heartbeat ? new Date(a.last_heartbeat * 1000).toLocaleTimeString() : 'never',
    ];
    cells.forEach((v, i) => {
      const td = tr.insertCell();
      td.textContent = v;
      if (i === 2) td.className = `state-${a.online ? a.health : a.unavailable || 'offline'}`;
    });
  }
}

// BGP (issue 14): per site, the routes steered, whether its appliances agree, and each
// appliance's sessions (state, routes, last error).
function renderBgp(fleet) {
  const body = document.querySelector('#bgp tbody');
  if (!body) return;
  body.textContent = '';
  const byId = Object.fromEntries(fleet.appliances.map((a) => [a.id, a]));
  for (const s of fleet.bgp_sites || []) {
    const tr = body.insertRow();
    tr.dataset.cluster = s.cluster;
    const sessions = s.appliances.map((id) => {
      const b = (byId[id] || {}).bgp;
      if (!b) return `${id}: –`;
      return `${id}: ` + b.sessions.map((x) => `${x.peer} ${x.state} (${x.routes} routes${x.last_error ? `, ${x.last_error}` : ''})`).join('; ');
    });
    const cells = [s.cluster, s.appliances.join(', '), s.routes,
      s.inconsistent ? `INCONSISTENT: only some hear ${s.partial.join(', ')}` : 'consistent', sessions.join(' · ')];
    cells.forEach((v, i) => {
      const td = tr.insertCell();
      td.textContent = v;
      if (i === 3) td.className = s.inconsistent ? 'state-error' : 'state-ok';
    });
  }
}

function draw(now) {
  const c = document.getElementById('chart');
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const ids = Object.keys(fleetState.series).sort();
  const max = Math.max(1, ...ids.flatMap((id) => fleetState.series[id].map((p) => p.v)));
  g.strokeStyle = '#eaecf0'; g.fillStyle = '#5b6675'; g.font = '12px system-ui';
  for (let i = 0; i <= 4; i++) {
    const y = 10 + (c.height - 30) * i / 4;
    g.beginPath(); g.moveTo(40, y); g.lineTo(c.width, y); g.stroke();
    g.fillText((max * (1 - i / 4)).toFixed(1), 0, y + 4);
  }
  g.fillText(`last ${HISTORY_SECS / 60} minutes`, c.width - 110, c.height - 4);
  const legend = document.getElementById('legend');
  legend.textContent = '';
  ids.forEach((id, k) => {
    const color = COLORS[k % COLORS.length];
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    fleetState.series[id].forEach((p, i) => {
      const x = 40 + (c.width - 40) * (1 - (now - p.t) / HISTORY_SECS);
      const y = 10 + (c.height - 30) * (1 - p.v / max);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
    const span = document.createElement('span');
    span.innerHTML = `<i style="background:${color}"></i>`;
    span.append(id);
    legend.append(span);
  });
}

// QoE (issue 16): per cluster, then its appliances: sessions, startup p50/p95, the share of
// sessions that rebuffered, media-time-weighted average bitrate, the throughput players measured
// (CMCD mtp) and the rate the appliance sent its large responses at.
async function pollQoe() {
  const res = await fetch('/v1/qoe');
  if (!res.ok) throw new Error(`GET /v1/qoe: ${res.status}`);
  const q = await res.json();
  fleetState.qoe = q;
  const body = document.querySelector('#qoe tbody');
  body.textContent = '';
  const ms = (v) => (v == null ? '–' : `${v} ms`);
  const kbps = (v) => (v == null ? '–' : `${v} kb/s`);
  const row = (label, g, cls) => {
    const tr = body.insertRow();
    tr.dataset.id = g.id;
    tr.className = cls;
    [label, g.sessions, ms(g.startup_p50_ms), ms(g.startup_p95_ms),
      `${(g.rebuffer_ratio * 100).toFixed(0)}% (${g.starved_sessions})`,
      kbps(g.avg_bitrate_kbps), kbps(g.avg_throughput_kbps), kbps(g.served_kbps),
    ].forEach((v) => { tr.insertCell().textContent = v; });
  };
  const clusterOf = {};
  for (const s of q.sessions) clusterOf[s.appliance_id] = s.cluster_id;
  for (const c of q.clusters) {
    row(c.id, c, 'qoe-cluster');
    for (const a of q.appliances.filter((x) => clusterOf[x.id] === c.id)) row(`  ${a.id}`, a, 'qoe-appliance');
  }
  if (!q.clusters.length) row('no sessions reported', { id: '', sessions: 0, starved_sessions: 0, rebuffer_ratio: 0 }, '');
}

const tick = () => {
  poll().catch((e) => { document.querySelector('.hint').textContent = e.message; });
  pollQoe().catch((e) => { document.getElementById('qoe-hint').textContent = e.message; });
};
tick();
setInterval(tick, 2000);
