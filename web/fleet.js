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

const tick = () => poll().catch((e) => { document.querySelector('.hint').textContent = e.message; });
tick();
setInterval(tick, 2000);
