// Catalogue features of a packaged title in headless Debian Chromium with Shaka Player (DASH) or
// hls.js (HLS): audio language switch, subtitle cues in video.textTracks in two languages, the
// forced track, hls.js's I-frame variants. Prints one JSON line; the Rust test asserts on it.
//
//   node catalogue.mjs --player shaka|hls --url http://127.0.0.1:PORT/TITLE/manifest.mpd \
//        --audio-from en --audio-to fr --text en --text fr [--thumbs 0.5,3,9]
//
// With --thumbs (Shaka only), `thumbs` lists Shaka's getThumbnails(imageTrack, t) for each time:
// the tile's position and size in its grid image, its start, duration and image URI; with
// --thumbs-only it stops there (Shaka on an HLS master, image playlist named by
// EXT-X-IMAGE-STREAM-INF).
//
// With --trick (a title with a keyframe-only trick play rendition), `trick` reports what the
// player made of it and stops there: Shaka's variant tracks and, per variant, the trick mode
// stream the manifest attached (`trickModeVideo`), the variant playing normally, then
// `player.trickPlay(4)` and the media fetched before and during it (Resource Timing); hls.js's
// levels and I-frame variants, and the level playing.
//
// Page and player are served from memory on the manifest's origin (see play.mjs). Every media
// request is recorded, so the test can check the switch changed the audio rendition fetched.
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
const audioTo = opt('audio-to');
const thumbTimes = (opt('thumbs', '') || '').split(',').filter((x) => x).map(Number);
const thumbsOnly = args.includes('--thumbs-only');
const trick = args.includes('--trick');
const texts = [];
args.forEach((a, i) => { if (a === '--text') texts.push(args[i + 1]); });
if (!['shaka', 'hls'].includes(player) || !url || (!audioTo && !thumbsOnly && !trick)) {
  console.error('usage: node catalogue.mjs --player shaka|hls --url URL (--audio-to LANG [--text LANG]... | --trick)');
  process.exit(2);
}
const lib = player === 'shaka'
  ? join(here, 'node_modules/shaka-player/dist/shaka-player.compiled.js')
  : join(here, 'node_modules/hls.js/dist/hls.js');
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
  const requests = [];
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith(origin) && !u.includes('__player')) requests.push(u.slice(origin.length));
  });
  await page.route(`${origin}/__player.html`, (r) => r.fulfill({ body: html, contentType: 'text/html' }));
  await page.route(`${origin}/__player.js`, (r) => r.fulfill({ body: readFileSync(lib), contentType: 'text/javascript' }));
  await page.goto(`${origin}/__player.html`);
  await page.addScriptTag({ url: `${origin}/__player.js` });
  const result = await page.evaluate(async ({ player, url, audioTo, texts, thumbTimes, thumbsOnly, trick }) => {
    const out = { errors: [], stalls: [], audio: {}, text: {}, forced: {}, iframes: null, thumbs: null, trick: null };
    performance.setResourceTimingBufferSize(100000);
    // Media and playlists fetched so far (path only), in order.
    const fetched = () => performance.getEntriesByType('resource')
      .map((e) => new URL(e.name).pathname).filter((u) => !u.includes('__player'));
    const video = document.querySelector('video');
    video.muted = true;
    video.addEventListener('error', () => out.errors.push(`video error ${video.error && video.error.code}: ${video.error && video.error.message}`));
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const until = async (cond, ms) => {
      const end = performance.now() + ms;
      while (performance.now() < end) { if (cond()) return true; await sleep(50); }
      return false;
    };
    // Every cue of every text track, by track language (or label).
    const allCues = () => {
      const res = {};
      for (const t of Array.from(video.textTracks)) {
        if (!t.cues) continue;
        const key = t.language || t.label || 'unknown';
        res[key] = (res[key] || []).concat(Array.from(t.cues).map((c) => [
          Math.round(c.startTime * 1000), Math.round(c.endTime * 1000), c.text]));
      }
      return res;
    };
    // Plays the whole title from 0 (at 2x) so every text segment is fetched.
    const playThrough = async () => {
      video.currentTime = 0;
      video.playbackRate = 2;
      try { await video.play(); } catch (e) { out.errors.push(`play(): ${e.message}`); }
      await until(() => video.ended, 60000);
      video.pause();
    };
    let p; let h;
    if (player === 'shaka') {
      shaka.polyfill.installAll();
      p = new shaka.Player();
      await p.attach(video);
      p.configure({ abr: { enabled: false }, preferredAudio: [{ language: 'en' }] });
      p.addEventListener('error', (e) => out.errors.push(`shaka ${e.detail && e.detail.code}: ${JSON.stringify(e.detail && e.detail.data).slice(0, 300)}`));
      try { await p.load(url); } catch (e) { out.errors.push(`shaka load ${e.code}: ${JSON.stringify(e.data).slice(0, 300)}`); return out; }
      if (trick) {
        const stream = (s) => s && { id: s.originalId, width: s.width, height: s.height, codecs: s.codecs };
        const activeTrack = () => {
          const t = p.getVariantTracks().find((v) => v.active);
          return t && { videoId: t.originalVideoId, width: t.width, height: t.height, videoCodec: t.videoCodec };
        };
        out.trick = {
          tracks: p.getVariantTracks().map((t) => ({ videoId: t.originalVideoId, width: t.width, height: t.height, videoCodec: t.videoCodec })),
          variants: p.getManifest().variants.map((v) => ({ video: stream(v.video), trickModeVideo: stream(v.video && v.video.trickModeVideo) })),
        };
        // Normal playback first: the ladder, never the trick rendition.
        try { await video.play(); } catch (e) { out.errors.push(`play(): ${e.message}`); }
        await until(() => video.currentTime > 1, 15000);
        out.trick.normal = { active: activeTrack(), currentTime: video.currentTime, fetched: fetched() };
        const before = fetched().length;
        p.trickPlay(4);
        const trickFetches = () => fetched().slice(before).filter((u) => u.includes('/trick-'));
        await until(() => trickFetches().some((u) => !u.endsWith('.m3u8') && !u.endsWith('/init.mp4')) || video.ended, 15000);
        await sleep(500);
        out.trick.during = { active: activeTrack(), currentTime: video.currentTime, rate: p.getPlaybackRate(), fetched: fetched().slice(before) };
        p.cancelTrickPlay();
        out.trick.after = { active: activeTrack(), rate: p.getPlaybackRate() };
        return out;
      }
      if (thumbTimes.length) {
        const images = p.getImageTracks();
        out.imageTracks = images.map((t) => ({ id: t.id, width: t.width, height: t.height, tilesLayout: t.tilesLayout }));
        if (!images.length) out.errors.push('no image track');
        else {
          out.thumbs = [];
          for (const t of thumbTimes) {
            const th = await p.getThumbnails(images[0].id, t);
            out.thumbs.push(th && {
              time: t, positionX: th.positionX, positionY: th.positionY, width: th.width, height: th.height,
              imageWidth: th.imageWidth, imageHeight: th.imageHeight, startTime: th.startTime, duration: th.duration,
              uri: th.uris && th.uris[0] && new URL(th.uris[0], url).pathname,
            });
          }
        }
        if (thumbsOnly) return out;
      }
      const active = () => p.getAudioTracks().find((t) => t.active);
      out.audio.tracks = p.getAudioTracks().map((t) => ({ language: t.language, roles: t.roles, channels: t.channelsCount, label: t.label }));
      out.audio.before = active() && active().language;
      out.text.tracks = p.getTextTracks().map((t) => ({ language: t.language, roles: t.roles, forced: t.forced, kind: t.kind }));
      // Forced: with the audio in the forced track's language and no subtitles chosen.
      const to = p.getAudioTracks().find((t) => t.language.startsWith(audioTo.slice(0, 2)));
      if (to) p.selectAudioTrack(to); else out.errors.push(`no audio track ${audioTo}`);
      await until(() => active() && active().language.startsWith(audioTo.slice(0, 2)), 10000);
      out.audio.after = active() && active().language;
      const at = p.getTextTracks().find((t) => t.active);
      out.forced.activeWithoutSelection = at ? { language: at.language, forced: at.forced } : null;
      await playThrough();
      out.forced.cues = allCues();
      for (const lang of texts) {
        const t = p.getTextTracks().find((x) => x.language.startsWith(lang) && !x.forced) || p.getTextTracks().find((x) => x.language.startsWith(lang));
        if (!t) { out.errors.push(`no text track ${lang}`); continue; }
        p.selectTextTrack(t);
        await playThrough();
        out.text[lang] = allCues();
      }
    } else {
      h = new Hls({ enableWorker: true, subtitlePreference: undefined });
      // A non-fatal stall (the buffer ran dry at 2x on a busy machine) is a timing condition,
      // reported apart; every other error, fatal or not, fails the test.
      h.on(Hls.Events.ERROR, (_, d) => {
        if (!d.fatal && d.details === 'bufferStalledError') out.stalls.push(video.currentTime);
        else out.errors.push(`hls.js ${d.type} ${d.details}${d.fatal ? ' fatal' : ''}`);
      });
      await new Promise((res) => {
        h.on(Hls.Events.MANIFEST_PARSED, res);
        h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) res(); });
        h.loadSource(url);
        h.attachMedia(video);
      });
      out.iframes = (h.iframeVariants || []).map((l) => ({ width: l.width, height: l.height, url: l.url, codecs: l.videoCodec }));
      if (trick) {
        const level = (l) => l && { width: l.width, height: l.height, url: new URL(l.url, url).pathname };
        out.trick = { levels: h.levels.map(level) };
        try { await video.play(); } catch (e) { out.errors.push(`play(): ${e.message}`); }
        await until(() => video.currentTime > 1, 15000);
        out.trick.normal = { level: level(h.levels[h.currentLevel]), currentTime: video.currentTime, fetched: fetched() };
        return out;
      }
      out.audio.tracks = h.audioTracks.map((t) => ({ lang: t.lang, name: t.name, default: t.default, channels: t.channels, characteristics: t.characteristics }));
      out.audio.before = h.audioTracks[h.audioTrack] && h.audioTracks[h.audioTrack].lang;
      out.text.tracks = h.subtitleTracks.map((t) => ({ lang: t.lang, name: t.name, forced: t.forced }));
      try { await video.play(); } catch (e) { out.errors.push(`play(): ${e.message}`); }
      await until(() => video.currentTime > 0.5, 10000);
      const idx = h.audioTracks.findIndex((t) => t.lang.startsWith(audioTo.slice(0, 2)));
      h.audioTrack = idx;
      await until(() => h.audioTrack === idx, 10000);
      out.audio.after = h.audioTracks[h.audioTrack] && h.audioTracks[h.audioTrack].lang;
      out.forced.activeWithoutSelection = h.subtitleTrack >= 0
        ? { lang: h.subtitleTracks[h.subtitleTrack].lang, forced: h.subtitleTracks[h.subtitleTrack].forced } : null;
      await playThrough();
      out.forced.cues = allCues();
      for (const lang of texts) {
        const k = h.subtitleTracks.findIndex((t) => t.lang.startsWith(lang) && !t.forced);
        const kk = k >= 0 ? k : h.subtitleTracks.findIndex((t) => t.lang.startsWith(lang));
        if (kk < 0) { out.errors.push(`no subtitle track ${lang}`); continue; }
        h.subtitleTrack = kk;
        h.subtitleDisplay = true;
        await playThrough();
        out.text[lang] = allCues();
      }
    }
    out.ended = video.ended;
    return out;
  }, { player, url, audioTo, texts, thumbTimes, thumbsOnly, trick });
  result.errors.push(...consoleErrors);
  result.requests = requests;
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
