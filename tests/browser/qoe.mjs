// QoE with real players in headless Debian Chromium: Shaka Player or dash.js (DASH) or hls.js
// (HLS) play an Outpost session's manifest with CMCD on in query mode (the session id as `sid`,
// the title as `cid`), small buffer goals so a slow appliance starves them, and content steering
// as the players implement it. Prints one JSON line: every request the page made (time, URL,
// status, CMSD-Dynamic answer), the player's error events (and non-fatal warnings apart), and
// how far playback got. The Rust test (tests/e2e/qoe_players.rs) asserts on it and on what the
// appliances and the control plane recorded.
//
//   node qoe.mjs play --player shaka|dash|hls --url MANIFEST --sid SID --cid CID \
//        [--seconds 20] [--rate 1] [--cmsd on|off] [--abr default|buffer] [--until-port PORT --until-segments N]
//
// With `--until-port`, playback stops early (before `--seconds`) once N media segments (.m4s)
// came from 127.0.0.1:PORT with status 200 and the steering manifest (/v1/steering/) was
// reloaded after the first of them (`stoppedEarly` in the JSON).
//   node qoe.mjs fleet --origin http://CONTROL_PLANE --web DIR --expect ROW_LABEL
//
// `fleet` loads the repository's fleet page (DIR/fleet.html, fleet.js), its fetches of /v1/fleet
// and /v1/qoe passed to the control plane at URL, and prints the cells
// of its QoE table once a row is labelled ROW_LABEL (or after 20 s).
//
// The pages and the players are served by a small HTTP server of this script on 127.0.0.1 (a
// page Chromium got by request interception counts as a public origin, and Local Network Access
// then blocks its requests to loopback); `/v1/*` on it is passed to the control plane (the fleet
// page fetches same-origin). Exit code 0 means the harness ran; the verdict is in the JSON.
import { chromium } from 'playwright-core';
import { createServer, request as httpRequest } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [mode, ...args] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};

const LIBS = {
  shaka: 'node_modules/shaka-player/dist/shaka-player.compiled.js',
  hls: 'node_modules/hls.js/dist/hls.min.js',
  dash: 'node_modules/dashjs/dist/modern/umd/dash.all.min.js',
};

// Serves `files` (path -> [body, content type]) and passes `/v1/*` to `upstream`; resolves to
// the server's origin.
function serve(files, upstream) {
  const server = createServer((req, res) => {
    const path = req.url.split('?')[0];
    const f = files[path];
    if (f) {
      res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' });
      res.end(f[0]);
      return;
    }
    if (upstream && path.startsWith('/v1/')) {
      const u = new URL(upstream);
      const p = httpRequest({ host: u.hostname, port: u.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      p.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
      req.pipe(p);
      return;
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    server.unref();
    resolve(`http://127.0.0.1:${server.address().port}`);
  }));
}

async function withBrowser(fn) {
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
    return await fn(page);
  } finally {
    if (context) await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

async function play() {
  const player = opt('player');
  const url = opt('url');
  const sid = opt('sid');
  const cid = opt('cid');
  const seconds = Number(opt('seconds', '20'));
  const rate = Number(opt('rate', '1'));
  const cmsd = opt('cmsd', 'on') === 'on';
  const untilPort = opt('until-port');
  const untilSegments = Number(opt('until-segments', '1'));
  // dash.js ABR: 'default', or 'buffer' (BOLA and the buffer rules only, throughput rule off).
  const abr = opt('abr', 'default');
  if (!LIBS[player] || !url || !sid || !cid) {
    console.error('usage: node qoe.mjs play --player shaka|dash|hls --url URL --sid SID --cid CID [--seconds N] [--rate R] [--cmsd on|off] [--abr default|buffer]');
    process.exit(2);
  }
  const html = '<!doctype html><meta charset="utf-8"><title>outpost qoe</title><video width="640" height="360" muted playsinline></video>';
  const origin = await serve({
    '/__qoe.html': [html, 'text/html'],
    '/__qoe.js': [readFileSync(join(here, LIBS[player])), 'text/javascript'],
  });
  return withBrowser(async (page) => {
    const t0 = Date.now();
    const requests = [];
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' || m.text().startsWith('qoe:')) console.error(`[page ${m.type()}] ${m.text()}`); });
    // A hung player must not hang the test: give up `seconds` + 60 s after the start.
    const watchdog = setTimeout(() => {
      console.log(JSON.stringify({ errors: [`qoe.mjs: no result within ${seconds + 60} s`], warnings: [], requests }));
      process.exit(0);
    }, (seconds + 60) * 1000);
    page.on('requestfinished', async (req) => {
      const u = req.url();
      if (u.includes('/__qoe')) return;
      let status = 0;
      let cmsdDynamic = null;
      try {
        const r = await req.response();
        status = r ? r.status() : 0;
        cmsdDynamic = r ? (r.headers()['cmsd-dynamic'] ?? null) : null;
      } catch { /* page closing */ }
      requests.push({ t: Date.now() - t0, url: u, status, cmsd_dynamic: cmsdDynamic });
      if (untilPort && status === 200) {
        const from = requests.filter((q) => q.status === 200
          && q.url.startsWith(`http://127.0.0.1:${untilPort}/`) && q.url.split('?')[0].endsWith('.m4s'));
        // ... and the steering manifest reloaded after the first of them: a player with an empty
        // buffer can fetch all N within milliseconds of a move, before any reload shows the move
        // stands.
        const reloaded = from.length > 0 && requests.some((q) => q.status === 200
          && q.url.includes('/v1/steering/') && q.t > from[0].t);
        if (from.length >= untilSegments && reloaded) page.evaluate(() => { window.qoeStop = true; }).catch(() => {});
      }
    });
    page.on('requestfailed', (req) => {
      if (!req.url().includes('/__qoe')) requests.push({ t: Date.now() - t0, url: req.url(), status: -1, failure: req.failure()?.errorText });
    });
    await page.goto(`${origin}/__qoe.html`);
    await page.addScriptTag({ url: `${origin}/__qoe.js` });
    const result = await page.evaluate(async ({ player, url, sid, cid, seconds, rate, cmsd, abr }) => {
      const out = { errors: [], warnings: [], stalls: 0, started: false };
      const video = document.querySelector('video');
      video.muted = true;
      video.addEventListener('error', () => out.errors.push(`video error ${video.error && video.error.code}: ${video.error && video.error.message}`));
      video.addEventListener('waiting', () => { if (out.started) out.stalls++; });
      if (player === 'shaka') {
        shaka.polyfill.installAll();
        const p = new shaka.Player();
        await p.attach(video);
        p.configure({
          cmcd: { enabled: true, useHeaders: false, sessionId: sid, contentId: cid },
          cmsd: { enabled: cmsd, applyMaximumSuggestedBitrate: cmsd },
          streaming: { bufferingGoal: 4, rebufferingGoal: 1, bufferBehind: 4 },
        });
        p.addEventListener('error', (e) => out.errors.push(`shaka ${e.detail && e.detail.code} severity ${e.detail && e.detail.severity}: ${JSON.stringify(e.detail && e.detail.data).slice(0, 300)}`));
        console.log('qoe: shaka loading');
        try { await p.load(url); } catch (e) { out.errors.push(`shaka load ${e.code}: ${JSON.stringify(e.data).slice(0, 300)}`); return out; }
      } else if (player === 'dash') {
        const p = dashjs.MediaPlayer().create();
        p.updateSettings({
          streaming: {
            cmcd: { enabled: true, mode: 'query', sid, cid },
            cmsd: { enabled: cmsd, abr: { applyMb: cmsd, etpWeightRatio: 0 } },
            buffer: { bufferTimeDefault: 4, bufferTimeAtTopQuality: 4, bufferTimeAtTopQualityLongForm: 4, bufferToKeep: 4 },
            // 'buffer': the choice follows the buffer (BOLA), not the measured throughput,
            // which a busy machine's browser lowers (downloads timed through a loaded main thread).
            ...(abr === 'buffer' ? { abr: { rules: { throughputRule: { active: false }, bolaRule: { active: true } } } } : {}),
          },
        });
        p.on(dashjs.MediaPlayer.events.ERROR, (e) => out.errors.push(`dash.js ${e.error && e.error.code}: ${e.error && e.error.message}`));
        p.on(dashjs.MediaPlayer.events.PLAYBACK_ERROR, (e) => out.errors.push(`dash.js playback: ${e.error && e.error.message}`));
        await new Promise((res) => {
          p.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, res);
          p.on(dashjs.MediaPlayer.events.ERROR, res);
          p.initialize(video, url, false);
        });
        if (out.errors.length) return out;
      } else {
        const h = new Hls({
          enableWorker: true,
          maxBufferLength: 4,
          maxMaxBufferLength: 4,
          cmcd: { sessionId: sid, contentId: cid, useHeaders: false },
        });
        h.on(Hls.Events.ERROR, (_, d) => (d.fatal ? out.errors : out.warnings).push(`hls.js ${d.type} ${d.details}${d.fatal ? ' fatal' : ''}`));
        await new Promise((res) => {
          h.on(Hls.Events.MANIFEST_PARSED, res);
          h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) res(); });
          h.loadSource(url);
          h.attachMedia(video);
        });
        if (out.errors.length) return out;
      }
      console.log('qoe: loaded, playing');
      video.playbackRate = rate;
      try { await Promise.race([video.play(), new Promise((_, no) => setTimeout(() => no(new Error('did not start within 30 s')), 30000))]); } catch (e) { out.errors.push(`play(): ${e.message}`); return out; }
      out.started = true;
      console.log('qoe: playing');
      const deadline = performance.now() + seconds * 1000;
      await new Promise((resolve) => {
        const tick = () => {
          if (video.ended || out.errors.length || window.qoeStop || performance.now() > deadline) { resolve(); return; }
          setTimeout(tick, 100);
        };
        tick();
      });
      out.ended = video.ended;
      out.stoppedEarly = Boolean(window.qoeStop);
      out.currentTime = video.currentTime;
      out.duration = video.duration;
      return out;
    }, { player, url, sid, cid, seconds, rate, cmsd, abr });
    // Let finished requests' handlers run.
    await new Promise((r) => setTimeout(r, 200));
    clearTimeout(watchdog);
    result.errors.push(...pageErrors);
    result.requests = requests;
    return result;
  });
}

async function fleet() {
  const origin = opt('origin');
  const web = opt('web');
  const expect = opt('expect');
  if (!origin || !web) {
    console.error('usage: node qoe.mjs fleet --origin URL --web DIR --expect LABEL');
    process.exit(2);
  }
  return withBrowser(async (page) => {
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    // The paths the demo's web server gives them (web/fleet.html names /demo/assets/...).
    const site = await serve({
      '/fleet': [readFileSync(join(web, 'fleet.html')), 'text/html'],
      '/demo/assets/fleet.js': [readFileSync(join(web, 'fleet.js')), 'text/javascript'],
      '/demo/assets/outpost.css': [readFileSync(join(web, 'outpost.css')), 'text/css'],
    }, origin);
    await page.goto(`${site}/fleet`);
    let rows = [];
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      rows = await page.$$eval('#qoe tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
      if (rows.some((r) => expect && r[0] === expect)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const hint = await page.$eval('#qoe-hint', (e) => e.textContent).catch(() => null);
    const headers = await page.$$eval('#qoe thead th', (ths) => ths.map((th) => th.textContent.trim())).catch(() => []);
    return { errors, headers, rows, hint };
  });
}

const out = mode === 'fleet' ? await fleet() : mode === 'play' ? await play() : null;
if (!out) {
  console.error('usage: node qoe.mjs play|fleet ...');
  process.exit(2);
}
console.log(JSON.stringify(out));
