// Plays a Common Encryption (Clear Key) title in headless Debian Chromium with Shaka Player
// (DASH or HLS) or hls.js (HLS) against a W3C Clear Key licence server, switching renditions,
// and prints one JSON line with what happened: heights played, errors, the key ids of every
// licence request and of every key the CDM reported, the EME key statuses, the renditions the
// player still offered at the end.
//
//   node play-encrypted.mjs --player shaka|hls --url http://127.0.0.1:PORT/TITLE/master.m3u8 \
//        --license http://127.0.0.1:PORT2/license [--rate 2]
//
// The page and the player library are served from memory by request interception on the
// manifest's origin; the licence server is another origin (CORS). Exit code 0 means the harness
// ran; the verdict is in the JSON (the Rust test asserts on it).
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const player = opt('player');
const url = opt('url');
const license = opt('license');
const rate = Number(opt('rate', '2'));
// --abr: adaptive selection starting from the top rendition, no forced switches (what a player
// does on its own when some keys are missing); default: ABR off, forced switches top → bottom.
const abr = args.includes('--abr');
if (!['shaka', 'hls'].includes(player) || !url || !license) {
  console.error('usage: node play-encrypted.mjs --player shaka|hls --url URL --license URL [--rate N]');
  process.exit(2);
}

const lib = player === 'shaka'
  ? join(here, 'node_modules/shaka-player/dist/shaka-player.compiled.js')
  : join(here, 'node_modules/hls.js/dist/hls.min.js');
const origin = new URL(url).origin;
const html = '<!doctype html><meta charset="utf-8"><title>outpost</title><video width="640" height="360" muted playsinline></video>';

// Records every MediaKeySession's licence messages and key statuses, whichever player drives EME.
const emeSpy = () => {
  window.__eme = { messages: [], statuses: {}, sessions: 0 };
  const gen = MediaKeySession.prototype.generateRequest;
  MediaKeySession.prototype.generateRequest = function (type, data) {
    window.__eme.sessions++;
    this.addEventListener('message', (e) => {
      try {
        const req = JSON.parse(new TextDecoder().decode(e.message));
        window.__eme.messages.push(req.kids || []);
      } catch (err) { window.__eme.messages.push([`unparsed: ${err.message}`]); }
    });
    this.addEventListener('keystatuseschange', () => {
      this.keyStatuses.forEach((status, kid) => {
        const b = new Uint8Array(kid.buffer ? kid.buffer.slice(kid.byteOffset, kid.byteOffset + kid.byteLength) : kid);
        const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
        window.__eme.statuses[hex] = status;
      });
    });
    return gen.call(this, type, data);
  };
};

const userDataDir = mkdtempSync(join(tmpdir(), 'outpost-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  const failed = [];
  page.on('console', (m) => { if (m.type() === 'error') failed.push(`console: ${m.text().slice(0, 300)}`); });
  page.on('requestfailed', (r) => failed.push(`${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`));
  await page.addInitScript(emeSpy);
  await page.route(`${origin}/__player.html`, (r) => r.fulfill({ body: html, contentType: 'text/html' }));
  await page.route(`${origin}/__player.js`, (r) => r.fulfill({ body: readFileSync(lib), contentType: 'text/javascript' }));
  await page.goto(`${origin}/__player.html`);
  await page.addScriptTag({ url: `${origin}/__player.js` });
  const result = await page.evaluate(async ({ player, url, license, rate, abr }) => {
    const out = { errors: [], warnings: [], heights: [], switches: 0, ended: false };
    const video = document.querySelector('video');
    video.muted = true;
    video.addEventListener('error', () => out.errors.push(`video error ${video.error && video.error.code}: ${video.error && video.error.message}`));
    let select; // (k) => switch to the k-th offered video rendition (sorted by height)
    let offered; // () => heights the player still offers
    if (player === 'shaka') {
      shaka.polyfill.installAll();
      const p = new shaka.Player();
      await p.attach(video);
      p.configure({
        abr: abr ? { enabled: true, defaultBandwidthEstimate: 1e9 } : { enabled: false },
        drm: { servers: { 'org.w3.clearkey': license } },
      });
      p.addEventListener('error', (e) => out.errors.push(`shaka ${e.detail && e.detail.code}: ${JSON.stringify(e.detail && e.detail.data).slice(0, 300)}`));
      try { await p.load(url); } catch (e) { out.errors.push(`shaka load ${e.code}: ${JSON.stringify(e.data).slice(0, 300)}`); return out; }
      const tracks = () => p.getVariantTracks().sort((a, b) => (a.height || 0) - (b.height || 0));
      offered = () => [...new Set(tracks().map((t) => t.height))];
      select = (k) => { const t = tracks(); p.selectVariantTrack(t[Math.min(k, t.length - 1)], true); };
    } else {
      const h = new Hls({
        enableWorker: true,
        emeEnabled: true,
        drmSystems: { 'org.w3.clearkey': { licenseUrl: license } },
      });
      h.on(Hls.Events.ERROR, (_, d) => {
        const line = `hls.js ${d.type} ${d.details}${d.fatal ? ' fatal' : ''}${d.error ? `: ${d.error.message}` : ''}`;
        (d.fatal ? out.errors : out.warnings).push(line);
      });
      await new Promise((res) => {
        h.on(Hls.Events.MANIFEST_PARSED, res);
        h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) res(); });
        h.loadSource(url);
        h.attachMedia(video);
      });
      const levels = () => h.levels.map((l, i) => ({ i, height: l.height })).sort((a, b) => a.height - b.height);
      offered = () => [...new Set(levels().map((l) => l.height))];
      if (abr) h.nextAutoLevel = levels()[levels().length - 1].i; else h.currentLevel = levels()[0].i;
      select = (k) => { const l = levels(); h.currentLevel = l[Math.min(k, l.length - 1)].i; };
    }
    video.playbackRate = rate;
    // Not awaited: with a key missing, play() stays pending while the element waits for it.
    video.play().catch((e) => out.errors.push(`play(): ${e.message}`));
    const deadline = performance.now() + 60000;
    let step = 0;
    await new Promise((resolve) => {
      const tick = () => {
        const hh = video.videoHeight;
        if (hh && out.heights[out.heights.length - 1] !== hh) out.heights.push(hh);
        const t = video.currentTime;
        if (!abr && step === 0 && t > 1) { select(1000); out.switches++; step = 1; }
        if (!abr && step === 1 && t > 6) { select(0); out.switches++; step = 2; }
        if (video.ended || out.errors.length || performance.now() > deadline) { resolve(); return; }
        setTimeout(tick, 100);
      };
      video.addEventListener('ended', () => setTimeout(resolve, 50));
      tick();
    });
    out.ended = video.ended;
    out.currentTime = video.currentTime;
    out.duration = video.duration;
    out.readyState = video.readyState;
    out.offered = offered();
    out.eme = window.__eme;
    return out;
  }, { player, url, license, rate, abr });
  result.errors.push(...consoleErrors);
  result.failedRequests = failed;
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
