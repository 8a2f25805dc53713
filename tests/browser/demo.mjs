// Drives the `outpost demo` pages in headless Debian Chromium and prints one JSON result.
//
//   node demo.mjs --url http://127.0.0.1:PORT --scenario play|failover|refusals|expiry|tracks
//                 [--player shaka|dash|hls] [--title ID] [--device ID] [--shots DIR] [--no-swap]
//
// play:      plays the title to the end, forcing one rendition switch through the player API.
// failover:  stops the appliance serving segments mid-playback, plays to the end, then waits for
//            the fleet page to show that appliance offline; restores it.
// refusals:  what a user sees for refused session starts (concurrent_limit, tier limits).
// expiry:    plays in a loop past several grant lifetimes; with --no-swap the page does not
//            refresh grants (the negative control).
// tracks:    on a looping title: the forced track with subtitles off, switching the audio
//            language and the subtitles (fr, en, off) through the page's menus, what the player
//            API and `video.textTracks` report after each, and the thumbnail the page shows when
//            hovering the timeline at --thumb-at seconds (its tile fetched again: status, type).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const flag = (name) => process.argv.includes(`--${name}`);
const base = arg('url');
const scenario = arg('scenario', 'play');
const player = arg('player', 'shaka');
const title = arg('title', 'demo-h264');
const device = arg('device', 'desktop-browser');
const shots = arg('shots', null);
if (!base) {
  console.error('usage: node demo.mjs --url URL --scenario NAME');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const userDataDir = mkdtempSync(join(tmpdir(), 'outpost-demo-chromium-'));
const result = { scenario, player, title, device };
let context;

async function openPlayer(page, query = '') {
  await page.goto(`${base}/demo${query}`);
  await page.waitForFunction(() => document.querySelectorAll('#title option').length > 0);
}

async function start(page, opts = {}) {
  await page.selectOption('#title', opts.title || title);
  await page.selectOption('#device', opts.device || device);
  await page.selectOption('#player', opts.player || player);
  if (opts.member) await page.selectOption('#member', opts.member);
  await page.click('#play');
}

async function waitPlaying(page, minTime = 1) {
  await page.waitForFunction((t) => {
    const v = document.getElementById('video');
    return (window.outpostDemo.segments.length >= 2 && v.currentTime > t) || window.outpostDemo.errors.length > 0;
  }, minTime, { timeout: 30000 });
}

async function forceSwitch(page) {
  return page.evaluate(() => {
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
  });
}

async function waitEnded(page, timeout = 60000) {
  await page.waitForFunction(() => window.outpostDemo.ended || window.outpostDemo.errors.length > 0, null, { timeout });
}

const snapshot = (page) => page.evaluate(() => {
  const s = window.outpostDemo;
  const v = document.getElementById('video');
  return {
    errors: s.errors, ended: s.ended, endedBy: s.endedBy, currentTime: v.currentTime, duration: v.duration,
    segments: s.segments, servedBy: s.servedBy, switches: s.switches,
    renditions: s.session ? s.session.renditions : null, tier: s.session ? s.session.tier : null,
    ranking: s.session ? s.session.appliances.map((a) => a.id) : null,
    heartbeats: s.heartbeats || 0, grantSwaps: s.grantSwaps || 0, stalls: s.stalls || 0,
    licenseKids: s.licenseKids || [],
    errorText: document.getElementById('error').textContent,
  };
});

// What the page's player reports about tracks, and every showing text track's cues.
const trackState = (page) => page.evaluate(() => {
  const s = window.outpostDemo;
  const v = document.getElementById('video');
  const showing = [...v.textTracks].filter((t) => t.mode === 'showing').map((t) => ({
    label: t.label, language: t.language, kind: t.kind,
    cues: [...(t.cues || [])].map((c) => ({ start: c.startTime, end: c.endTime, text: c.text })),
    active: [...(t.activeCues || [])].map((c) => ({ start: c.startTime, end: c.endTime, text: c.text })),
  }));
  return {
    currentTime: v.currentTime, paused: v.paused, audioLanguages: s.audioLanguages(), audio: s.activeAudio(),
    text: s.activeText(), menuAudio: document.getElementById('audio').value,
    menuSubtitles: [...document.getElementById('subtitles').options].map((o) => o.value), showing,
    errors: s.errors,
  };
});

// Waits until `pred(trackState)` holds (checked in Node), returning the state; on timeout the
// last state goes into the error.
async function waitTracks(page, pred, what, timeout = 15000) {
  const until = Date.now() + timeout;
  let st;
  for (;;) {
    st = await trackState(page);
    if (pred(st)) return st;
    if (st.errors.length || Date.now() > until) throw new Error(`${what}: ${JSON.stringify(st)}`);
    await sleep(150);
  }
}

const showingText = (st) => st.showing.flatMap((t) => t.cues.map((c) => c.text)).join('\n');

// Playback goes on: the position moves by `secs` (looping titles wrap, so count the movement).
async function keepsPlaying(page, secs) {
  let last = (await trackState(page)).currentTime;
  let moved = 0;
  const until = Date.now() + 15000;
  while (moved < secs) {
    if (Date.now() > until) throw new Error(`playback stopped after ${moved.toFixed(2)} s`);
    await sleep(200);
    const now = (await trackState(page)).currentTime;
    moved += now >= last ? now - last : now;
    last = now;
  }
  return moved;
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  result.consoleErrors = consoleErrors;

  if (scenario === 'play') {
    await openPlayer(page);
    await start(page);
    await waitPlaying(page);
    result.forced = await forceSwitch(page);
    await waitEnded(page);
    Object.assign(result, await snapshot(page));
    if (shots) {
      await page.screenshot({ path: join(shots, `player-${player}-${title}.png`), fullPage: true });
      const fleet = await context.newPage();
      await fleet.goto(`${base}/fleet`);
      await fleet.waitForFunction(() => document.querySelectorAll('#fleet tbody tr').length > 0);
      await sleep(2500);
      await fleet.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });
    }
  } else if (scenario === 'failover') {
    await openPlayer(page, '?buffer=4');
    await start(page);
    await waitPlaying(page, 0.5);
    const before = await snapshot(page);
    const victim = before.segments[before.segments.length - 1].appliance;
    result.victim = victim;
    // The stop answers once the appliance process has exited (it drains in-flight responses
    // first), so segments recorded from then on were fetched after it was gone.
    const stopped = await page.evaluate(async (id) => (await fetch(`/demo/api/appliances/${id}/stop`, { method: 'POST' })).status, victim);
    result.stopStatus = stopped;
    result.segmentsBeforeStop = (await snapshot(page)).segments.length;
    const t0 = Date.now();
    await waitEnded(page);
    Object.assign(result, await snapshot(page));
    result.afterStop = result.segments.slice(result.segmentsBeforeStop).map((s) => s.appliance);
    const fleet = await context.newPage();
    await fleet.goto(`${base}/fleet`);
    await fleet.waitForFunction((id) => {
      const row = document.querySelector(`#fleet tr[data-id="${id}"]`);
      return row && row.cells[2].textContent === 'offline';
    }, victim, { timeout: 30000 });
    result.offlineSeenAfterMs = Date.now() - t0;
    if (shots) await fleet.screenshot({ path: join(shots, 'fleet-failover.png'), fullPage: true });
    await page.evaluate(async (id) => fetch(`/demo/api/appliances/${id}/restore`, { method: 'POST' }), victim);
  } else if (scenario === 'refusals') {
    // A plan with one stream: the second concurrent session is refused.
    await openPlayer(page);
    await start(page, { member: 'basic-member' });
    await waitPlaying(page, 0.2);
    result.first = await snapshot(page);
    const second = await context.newPage();
    await openPlayer(second);
    await start(second, { member: 'basic-member' });
    await second.waitForFunction(() => document.getElementById('error').textContent.length > 0, null, { timeout: 15000 });
    result.secondError = await second.evaluate(() => document.getElementById('error').textContent);
    // A device without a key system the title is protected with.
    const drm = await context.newPage();
    await openPlayer(drm);
    await start(drm, { device: 'playready-tv' });
    await drm.waitForFunction(() => document.getElementById('error').textContent.length > 0, null, { timeout: 15000 });
    result.drmError = await drm.evaluate(() => document.getElementById('error').textContent);
    // A device cleared for every tier the plan allows, for comparison with the SD-only one.
    const full = await context.newPage();
    await openPlayer(full);
    await start(full);
    await waitEnded(full);
    result.full = await snapshot(full);
    // An SD-only device: the session lists SD renditions only and fetches nothing else.
    const sd = await context.newPage();
    await openPlayer(sd);
    await start(sd, { device: 'sd-smart-tv' });
    await waitEnded(sd);
    result.sd = await snapshot(sd);
  } else if (scenario === 'expiry') {
    // The browser's HTTP cache would answer repeated ranges of the same URL without asking the
    // appliance, hiding expired grants: turn it off so every fetch reaches an appliance.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await openPlayer(page, `?loop=1&buffer=4${flag('no-swap') ? '&swap=0' : ''}`);
    await start(page);
    const until = Date.now() + Number(arg('play-ms', '45000'));
    while (Date.now() < until) {
      const s = await snapshot(page);
      if (s.errors.length) break;
      await sleep(1000);
    }
    Object.assign(result, await snapshot(page));
  } else if (scenario === 'tracks') {
    await openPlayer(page, '?loop=1');
    await start(page);
    await waitPlaying(page, 0.3);
    // Subtitles off and English audio: the English forced track (signs) shows by itself.
    result.initial = await waitTracks(page, (st) => showingText(st).includes('[Sign:'), 'forced track');
    // Audio: pick French from the page's menu; the player reports it and playback continues.
    await page.selectOption('#audio', 'fr');
    result.french = await waitTracks(page, (st) => st.audio && st.audio.startsWith('fr'), 'audio fr');
    result.movedAfterFrench = await keepsPlaying(page, 1.5);
    result.frenchLater = await trackState(page);
    // Subtitles in French, then English, then off again (the forced track follows the audio:
    // none for French).
    for (const lang of ['fr', 'en']) {
      await page.selectOption('#subtitles', lang);
      const marker = lang === 'fr' ? 'sous-titres' : 'English subtitles';
      result[`subs_${lang}`] = await waitTracks(page, (st) => st.text && st.text.lang === lang && !st.text.forced
        && showingText(st).includes(marker), `subtitles ${lang}`);
      // Cues at the right times: sample activeCues against the position a few times.
      const samples = [];
      for (let i = 0; i < 6; i++) {
        await sleep(400);
        const st = await trackState(page);
        samples.push({ t: st.currentTime, active: st.showing.flatMap((x) => x.active) });
      }
      result[`samples_${lang}`] = samples;
    }
    await page.selectOption('#subtitles', 'off');
    result.offFrench = await waitTracks(page, (st) => st.text === null, 'subtitles off with French audio');
    await page.selectOption('#audio', 'en');
    result.offEnglish = await waitTracks(page, (st) => st.audio && st.audio.startsWith('en') && st.text && st.text.forced,
      'forced track back with English audio');
    // Thumbnails: hover the timeline where --thumb-at seconds are.
    const at = Number(arg('thumb-at', '7'));
    const box = await page.locator('#timeline').boundingBox();
    const duration = await page.evaluate(() => document.getElementById('video').duration);
    await page.mouse.move(box.x + (at / duration) * box.width, box.y + box.height / 2);
    await page.waitForFunction(() => window.outpostDemo.lastThumbnail, null, { timeout: 10000 });
    result.thumbnail = await page.evaluate(async () => {
      const t = window.outpostDemo.lastThumbnail;
      const res = await fetch(t.url);
      const bytes = new Uint8Array(await res.arrayBuffer());
      return { ...t, status: res.status, contentType: res.headers.get('content-type'),
        appliance: res.headers.get('outpost-appliance'), bytes: bytes.length,
        jpeg: bytes[0] === 0xff && bytes[1] === 0xd8,
        shown: !document.getElementById('thumb').hidden };
    });
    if (shots) await page.screenshot({ path: join(shots, `tracks-${player}-${title}.png`), fullPage: true });
    Object.assign(result, await snapshot(page));
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (e) {
  result.failure = String(e && e.stack ? e.stack : e);
  try { Object.assign(result, await snapshot(context.pages()[0])); } catch (_) { /* page gone */ }
} finally {
  if (context) {
    // Close pages the way a user leaves them, so each page ends its session (pagehide).
    for (const p of context.pages()) await p.close({ runBeforeUnload: true }).catch(() => {});
    await sleep(300);
    await context.close();
  }
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
