// Drives the `outpost demo` player page in headless Debian Firefox ESR through W3C WebDriver
// (geckodriver, which the caller starts) and prints one JSON result. Playwright cannot drive
// Debian's Firefox, so this speaks WebDriver's HTTP protocol itself with Node's fetch: no
// dependencies.
//
//   node firefox.mjs --url http://127.0.0.1:PORT --webdriver http://127.0.0.1:GECKO_PORT
//                    [--plays shaka:demo-h264,hls:demo-vp9,...] [--device ID] [--shots DIR]
//
// For each player:title pair (one browser session, a fresh page load each): pick it in the
// page's menus, click Play, force one rendition switch through the player API, play to the end,
// and report what the page's `window.outpostDemo` hooks, the video element (decoded frames, a
// frame's pixels in a canvas and in a screenshot) and the page's resource timing entries say. Exit code 0 means the harness ran;
// the verdict is in the JSON (the Rust test asserts on it).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const base = arg('url');
const webdriver = arg('webdriver');
const device = arg('device', 'desktop-browser');
const shots = arg('shots', null);
const plays = arg('plays', 'shaka:demo-h264,hls:demo-h264,shaka:demo-vp9,hls:demo-vp9')
  .split(',').map((p) => { const [player, title] = p.split(':'); return { player, title }; });
const firefox = arg('binary', '/usr/bin/firefox-esr');
if (!base || !webdriver) {
  console.error('usage: node firefox.mjs --url URL --webdriver URL [--plays player:title,...]');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One WebDriver command; WebDriver errors (`value.error`) throw with their message.
async function wd(method, path, body) {
  const res = await fetch(`${webdriver}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok || (json.value && json.value.error)) {
    const v = json.value || {};
    throw new Error(`WebDriver ${method} ${path}: ${res.status} ${v.error || ''}: ${v.message || JSON.stringify(json)}`);
  }
  return json.value;
}

let session = null;
const cmd = (method, path, body) => wd(method, `/session/${session}${path}`, body);
// Runs `fn` in the page with `args` (JSON values) and returns its (JSON) result.
const evaluate = (fn, ...args) => cmd('POST', '/execute/sync', { script: `return (${fn}).apply(null, arguments);`, args });

// Polls `fn` in the page until it returns a truthy value; on timeout the last value goes into
// the error.
async function waitFor(fn, what, timeout, ...args) {
  const until = Date.now() + timeout;
  for (;;) {
    const v = await evaluate(fn, ...args);
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(200);
  }
}

async function screenshot(name) {
  if (!shots) return;
  const png = await cmd('GET', '/screenshot');
  writeFileSync(join(shots, name), Buffer.from(png, 'base64'));
}

// An 8-bit RGB or RGBA, non-interlaced PNG (what Firefox's screenshots are) as
// {width, height, channels, pixels}.
function decodePng(buf) {
  let pos = 8; let width = 0; let height = 0; let channels = 0; const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos); const type = buf.toString('latin1', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4);
      const [depth, colour, , , interlace] = data.subarray(8);
      if (depth !== 8 || interlace !== 0 || ![2, 6].includes(colour)) throw new Error(`PNG kind ${depth}/${colour}/${interlace}`);
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      let pred = 0;
      if (filter === 1) pred = a;
      else if (filter === 2) pred = b;
      else if (filter === 3) pred = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c; const pa = Math.abs(p - a); const pb = Math.abs(p - b); const pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      pixels[y * stride + x] = (line[x] + pred) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

// The video element as the browser composited it (WebDriver's element screenshot, so EME
// output counts too: a page cannot read protected frames back): the spread of the luma in its
// upper half (the player's controls and the subtitles sit lower) and the share of pixels that
// are not near-black. Saved as a PNG next to the page screenshots.
async function videoPixels(name) {
  const video = await cmd('POST', '/element', { using: 'css selector', value: '#video' });
  const png = Buffer.from(await cmd('GET', `/element/${Object.values(video)[0]}/screenshot`), 'base64');
  if (shots) writeFileSync(join(shots, name), png);
  const { width, height, channels, pixels } = decodePng(png);
  let sum = 0; let sq = 0; let lit = 0; let n = 0;
  for (let y = 0; y < Math.floor(height / 2); y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      const l = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      sum += l; sq += l * l; n += 1;
      if (l > 24) lit += 1;
    }
  }
  const mean = sum / n;
  return { width, height, meanLuma: mean, lumaStdDev: Math.sqrt(Math.max(0, sq / n - mean * mean)), litShare: lit / n };
}

// In the page: catch what the page throws from now on (WebDriver has no page error events), and
// keep every resource timing entry (the default buffer holds 250).
function watchErrors() {
  window.firefoxPageErrors = [];
  performance.setResourceTimingBufferSize(5000);
  window.addEventListener('error', (e) => window.firefoxPageErrors.push(String(e.message)));
  window.addEventListener('unhandledrejection', (e) => window.firefoxPageErrors.push(String(e.reason)));
}

// In the page: the same menus a person uses; the caller clicks Play.
function choose(title, device, player) {
  for (const [id, v] of [['title', title], ['device', device], ['player', player]]) {
    const sel = document.getElementById(id);
    if (![...sel.options].some((o) => o.value === v)) return `no ${v} in #${id}`;
    sel.value = v;
  }
  return null;
}

function playing() {
  const v = document.getElementById('video');
  return (window.outpostDemo.segments.length >= 2 && v.currentTime > 1) || window.outpostDemo.errors.length > 0;
}

// In the page: one rendition switch through the player's API (the same as demo.mjs does).
function forceSwitch() {
  const s = window.outpostDemo;
  if (s.kind === 'shaka') {
    const p = s.player;
    p.configure({ abr: { enabled: false } });
    const tracks = p.getVariantTracks();
    const active = tracks.find((t) => t.active);
    const other = tracks.filter((t) => t.height !== active.height).sort((a, b) => a.height - b.height)[0];
    p.selectVariantTrack(other, true);
    return `${active.height}p->${other.height}p`;
  }
  if (s.kind === 'dash') {
    // dash.js 5: ABR off for video, then the lowest other rendition by id, replacing the
    // buffered segments ahead (forceReplace) so the switch shows before the end.
    const p = s.player;
    p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
    const active = p.getCurrentRepresentationForType('video');
    const other = p.getRepresentationsByType('video').filter((r) => r.height !== active.height)
      .sort((a, b) => a.height - b.height)[0];
    p.setRepresentationForTypeById('video', other.id, true);
    return `${active.height}p->${other.height}p`;
  }
  const h = s.player;
  const target = h.currentLevel === 0 ? h.levels.length - 1 : 0;
  h.autoLevelEnabled = false;
  h.currentLevel = target;
  return `level->${target}`;
}

// In the page: the current video frame drawn into a 64x36 canvas; the spread of its luma says
// whether a picture was decoded (a blank or black frame has next to none). Firefox draws nothing
// of EME-protected video (Clear Key included): the canvas stays transparent black. A refusal
// (an exception) comes back as its reason.
function frameStats() {
  const v = document.getElementById('video');
  try {
    const c = document.createElement('canvas');
    c.width = 64; c.height = 36;
    const ctx = c.getContext('2d');
    ctx.drawImage(v, 0, 0, c.width, c.height);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let sum = 0; let sq = 0; const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sq += y * y;
    }
    const mean = sum / n;
    return { at: v.currentTime, width: v.videoWidth, height: v.videoHeight, meanLuma: mean, lumaStdDev: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
  } catch (e) {
    return { at: v.currentTime, error: String(e) };
  }
}

function ended() {
  const s = window.outpostDemo;
  const v = document.getElementById('video');
  return s.ended || v.ended || s.errors.length > 0;
}

// In the page: what the test asserts on.
function snapshot() {
  const s = window.outpostDemo;
  const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const license = s.session && s.session.license ? s.session.license.url : null;
  const resources = performance.getEntriesByType('resource');
  return {
    errors: s.errors, pageErrors: window.firefoxPageErrors || [], ended: s.ended, endedBy: s.endedBy, videoEnded: v.ended,
    currentTime: v.currentTime, duration: v.duration, videoWidth: v.videoWidth, videoHeight: v.videoHeight,
    quality: q && { totalVideoFrames: q.totalVideoFrames, droppedVideoFrames: q.droppedVideoFrames,
      corruptedVideoFrames: q.corruptedVideoFrames },
    segments: s.segments, servedBy: s.servedBy, switches: s.switches,
    renditions: s.session ? s.session.renditions : null,
    ranking: s.session ? s.session.appliances.map((a) => a.id) : null,
    applianceOrigins: s.session ? s.session.appliances.map((a) => new URL(a.base_url).origin) : [],
    license, licenseKids: s.licenseKids || [],
    licenseRequests: license ? resources.filter((r) => r.name.split('?')[0] === license.split('?')[0]).length : 0,
    // Media fetched from each origin, as the browser's resource timing saw it.
    fetchedFrom: resources.reduce((acc, r) => {
      const o = new URL(r.name).origin;
      if (o !== location.origin) acc[o] = (acc[o] || 0) + 1;
      return acc;
    }, {}),
    errorText: document.getElementById('error').textContent,
  };
}

const result = { plays: [] };
try {
  // Firefox's own media stack: autoplay allowed (the video is muted anyway), EME (Clear Key) on,
  // nothing phoning home from a test machine.
  const caps = await wd('POST', '/session', {
    capabilities: {
      alwaysMatch: {
        browserName: 'firefox',
        pageLoadStrategy: 'normal',
        'moz:firefoxOptions': {
          binary: firefox,
          args: ['-headless'],
          prefs: {
            'media.autoplay.default': 0,
            'media.autoplay.blocking_policy': 0,
            'media.eme.enabled': true,
            'media.gmp-manager.updateEnabled': false,
            'app.update.enabled': false,
            'browser.shell.checkDefaultBrowser': false,
            'datareporting.policy.dataSubmissionEnabled': false,
            'toolkit.telemetry.enabled': false,
            'network.captive-portal-service.enabled': false,
            'network.connectivity-service.enabled': false,
            'extensions.update.enabled': false,
            'browser.safebrowsing.downloads.enabled': false,
            'browser.safebrowsing.malware.enabled': false,
            'browser.safebrowsing.phishing.enabled': false,
          },
        },
      },
    },
  });
  session = caps.sessionId;
  result.browser = { name: caps.capabilities.browserName, version: caps.capabilities.browserVersion };
  await cmd('POST', '/timeouts', { script: 30000, pageLoad: 60000 });
  await cmd('POST', '/window/rect', { width: 1280, height: 900 });
  // What Firefox says it can decode and decrypt, for the report when something does not play.
  await cmd('POST', '/url', { url: `${base}/demo` });
  result.support = await cmd('POST', '/execute/async', {
    script: `const done = arguments[arguments.length - 1];
      const types = { h264: 'video/mp4; codecs="avc1.64001f"', aac: 'audio/mp4; codecs="mp4a.40.2"',
        vp9: 'video/mp4; codecs="vp09.00.10.08"', opus: 'audio/mp4; codecs="opus"' };
      const mse = Object.fromEntries(Object.entries(types).map(([k, t]) => [k, MediaSource.isTypeSupported(t)]));
      navigator.requestMediaKeySystemAccess('org.w3.clearkey', [{ initDataTypes: ['cenc'],
        videoCapabilities: [{ contentType: types.h264 }], audioCapabilities: [{ contentType: types.aac }] }])
        .then(() => done({ mse, clearKey: true }), (e) => done({ mse, clearKey: String(e) }));`,
    args: [],
  });

  for (const { player, title } of plays) {
    const play = { player, title };
    result.plays.push(play);
    try {
      await cmd('POST', '/url', { url: `${base}/demo` });
      await waitFor(() => document.querySelectorAll('#title option').length > 0, 'the title menu', 15000);
      await evaluate(watchErrors);
      const missing = await evaluate(choose, title, device, player);
      if (missing) throw new Error(missing);
      const button = await cmd('POST', '/element', { using: 'css selector', value: '#play' });
      await cmd('POST', `/element/${Object.values(button)[0]}/click`, {});
      const t0 = Date.now();
      await waitFor(playing, 'playback to start', 30000);
      play.startedAfterMs = Date.now() - t0;
      play.frame = await evaluate(frameStats);
      play.shown = await videoPixels(`firefox-${player}-${title}-video.png`);
      play.forced = await evaluate(forceSwitch);
      await screenshot(`firefox-${player}-${title}-playing.png`);
      await waitFor(ended, 'the end', 90000);
      play.playedForMs = Date.now() - t0;
      Object.assign(play, await evaluate(snapshot));
      await screenshot(`firefox-${player}-${title}.png`);
    } catch (e) {
      play.failure = String(e && e.stack ? e.stack : e);
      try { Object.assign(play, await evaluate(snapshot)); } catch (_) { /* page gone */ }
    }
  }
  // Leave the page so it ends its session (pagehide), like a person closing the tab.
  await cmd('POST', '/url', { url: 'about:blank' });
} catch (e) {
  result.failure = String(e && e.stack ? e.stack : e);
} finally {
  if (session) await wd('DELETE', `/session/${session}`).catch(() => {});
}
console.log(JSON.stringify(result));
