// Plays a packaged title in headless Debian Chromium with Shaka Player (DASH) or hls.js (HLS),
// switching renditions and seeking, and prints one JSON line with what happened.
//
//   node play.mjs --player shaka|hls --url http://127.0.0.1:PORT/TITLE/manifest.mpd \
//        --codecs 'video/mp4; codecs="avc1.64001e"' ... [--rate 2]
//
// The page and both players are served from memory by request interception on the manifest's
// origin, so media requests are same-origin. Exit code 0 means the harness ran; the verdict is
// in the JSON (the Rust test asserts on it).
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
const rate = Number(opt('rate', '2'));
const types = [];
args.forEach((a, i) => { if (a === '--codecs') types.push(args[i + 1]); });
if (!['shaka', 'hls'].includes(player) || !url) {
  console.error('usage: node play.mjs --player shaka|hls --url URL [--codecs TYPE]...');
  process.exit(2);
}

const lib = player === 'shaka'
  ? join(here, 'node_modules/shaka-player/dist/shaka-player.compiled.js')
  : join(here, 'node_modules/hls.js/dist/hls.min.js');
const origin = new URL(url).origin;
const html = '<!doctype html><meta charset="utf-8"><title>outpost</title><video width="640" height="360" muted playsinline></video>';

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
  await page.route(`${origin}/__player.html`, (r) => r.fulfill({ body: html, contentType: 'text/html' }));
  await page.route(`${origin}/__player.js`, (r) => r.fulfill({ body: readFileSync(lib), contentType: 'text/javascript' }));
  await page.goto(`${origin}/__player.html`);
  await page.addScriptTag({ url: `${origin}/__player.js` });
  const result = await page.evaluate(async ({ player, url, rate, types }) => {
    const out = { errors: [], heights: [], switches: 0, seeked: false, ended: false, supported: {} };
    for (const t of types) out.supported[t] = MediaSource.isTypeSupported(t);
    const video = document.querySelector('video');
    video.muted = true;
    video.addEventListener('error', () => out.errors.push(`video error ${video.error && video.error.code}: ${video.error && video.error.message}`));
    let select; // (k) => switch to the k-th video rendition
    let count;
    if (player === 'shaka') {
      shaka.polyfill.installAll();
      const p = new shaka.Player();
      await p.attach(video);
      p.configure({ abr: { enabled: false } });
      p.addEventListener('error', (e) => out.errors.push(`shaka ${e.detail && e.detail.code}: ${JSON.stringify(e.detail && e.detail.data).slice(0, 300)}`));
      try { await p.load(url); } catch (e) { out.errors.push(`shaka load ${e.code}: ${JSON.stringify(e.data).slice(0, 300)}`); return out; }
      const tracks = () => p.getVariantTracks().sort((a, b) => (a.height || 0) - (b.height || 0));
      count = tracks().length;
      select = (k) => p.selectVariantTrack(tracks()[k % count], true);
    } else {
      const h = new Hls({ enableWorker: true });
      h.on(Hls.Events.ERROR, (_, d) => out.errors.push(`hls.js ${d.type} ${d.details}${d.fatal ? ' fatal' : ''}`));
      await new Promise((res) => {
        h.on(Hls.Events.MANIFEST_PARSED, res);
        h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) res(); });
        h.loadSource(url);
        h.attachMedia(video);
      });
      count = h.levels.length;
      h.currentLevel = 0;
      select = (k) => { h.currentLevel = k % count; };
    }
    video.playbackRate = rate;
    try { await video.play(); } catch (e) { out.errors.push(`play(): ${e.message}`); return out; }
    const deadline = performance.now() + 120000;
    let step = 0;
    await new Promise((resolve) => {
      const tick = () => {
        const h = video.videoHeight;
        if (h && out.heights[out.heights.length - 1] !== h) out.heights.push(h);
        const d = video.duration;
        const t = video.currentTime;
        if (step === 0 && t > 1) { select(0); out.switches++; step = 1; }
        if (step === 1 && t > 3 && d) { video.currentTime = d / 2; out.seeked = true; step = 2; }
        if (step === 2 && t > d / 2 + 1) { select(count - 1); out.switches++; step = 3; }
        if (video.ended || out.errors.some((e) => e.includes('fatal') || e.startsWith('shaka') || e.startsWith('video'))
            || performance.now() > deadline) { resolve(); return; }
        setTimeout(tick, 100);
      };
      video.addEventListener('ended', () => setTimeout(resolve, 50));
      tick();
    });
    out.ended = video.ended;
    out.currentTime = video.currentTime;
    out.duration = video.duration;
    out.renditions = count;
    return out;
  }, { player, url, rate, types });
  result.errors.push(...consoleErrors);
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
