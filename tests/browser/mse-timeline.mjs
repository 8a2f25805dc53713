// Appends every rendition of a packaged title, file by file, to its own MSE SourceBuffer in
// headless Debian Chromium and prints the buffered ranges as JSON: one range per rendition
// means continuous tfdt (no gap, no overlap), and its start/end show the presentation timeline
// Chromium derives (edit lists included).
//
//   node mse-timeline.mjs --title-url http://127.0.0.1:PORT/TITLE/
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const i = process.argv.indexOf('--title-url');
const titleUrl = i >= 0 ? process.argv[i + 1] : null;
if (!titleUrl) {
  console.error('usage: node mse-timeline.mjs --title-url URL/');
  process.exit(2);
}
const origin = new URL(titleUrl).origin;
const userDataDir = mkdtempSync(join(tmpdir(), 'outpost-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  await page.route(`${origin}/__blank.html`, (r) => r.fulfill({ body: '<!doctype html>', contentType: 'text/html' }));
  await page.goto(`${origin}/__blank.html`);
  const result = await page.evaluate(async (titleUrl) => {
    const catalog = await (await fetch(new URL('catalog.json', titleUrl))).json();
    const out = {};
    for (const r of catalog.renditions) {
      const mime = `${r.kind}/mp4; codecs="${r.codec}"`;
      const entry = { mime, supported: MediaSource.isTypeSupported(mime), ranges: [], error: null };
      out[r.id] = entry;
      if (!entry.supported) continue;
      const ms = new MediaSource();
      const v = document.createElement('video');
      v.src = URL.createObjectURL(ms);
      await new Promise((res) => ms.addEventListener('sourceopen', res, { once: true }));
      const sb = ms.addSourceBuffer(mime);
      try {
        for (const f of r.files.filter((f) => !f.endsWith('.m3u8'))) {
          const b = await (await fetch(new URL(f, titleUrl))).arrayBuffer();
          sb.appendBuffer(b);
          await new Promise((res, rej) => {
            sb.addEventListener('updateend', res, { once: true });
            sb.addEventListener('error', () => rej(new Error(`append ${f} failed`)), { once: true });
          });
        }
      } catch (e) { entry.error = e.message; }
      for (let k = 0; k < sb.buffered.length; k++) entry.ranges.push([sb.buffered.start(k), sb.buffered.end(k)]);
    }
    return out;
  }, titleUrl);
  console.log(JSON.stringify(result));
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
