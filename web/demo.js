// Outpost demo player page. Plays a session's steered manifest with Shaka Player or dash.js
// (DASH) or hls.js (HLS) and shows which appliance served each segment (the `Outpost-Appliance` response
// header, exposed by the appliances through CORS), rendition switches, buffer level and the
// session's lease and licence state. The person picks the audio language and the subtitles
// (or off; an English forced track for signs shows whenever subtitles are off and the audio is
// English) through each player's own track API, and hovering the timeline shows a thumbnail
// from the title's image track. `window.outpostDemo` exposes the live state for tests.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  session: null,
  player: null,      // shaka.Player, a dash.js MediaPlayer or Hls
  kind: null,        // 'shaka' | 'dash' | 'hls'
  segments: [],      // {t, file, appliance, bytes}
  servedBy: {},      // appliance id -> segment count
  switches: [],      // rendition ids in switch order
  errors: [],
  heartbeatTimer: null,
  ended: false,
  textChoice: 'off', // 'off' (forced signs only) or a subtitle language
  textVisible: false,
  thumbs: null,      // hls.js: the parsed HLS image playlist
};
window.outpostDemo = state;
// `?swap=0` turns the grant refresh off (the negative control of the grant-expiry test).
const params = new URLSearchParams(location.search);
state.swapGrants = params.get('swap') !== '0';
// `?buffer=N` keeps at most N seconds ahead (and behind), so playback keeps fetching from the
// appliances instead of buffering the whole title at once; `?loop=1` plays forever.
const bufferSecs = Number(params.get('buffer')) || 0;
const loop = params.get('loop') === '1';

async function api(method, path, body, token) {
  const init = { method, headers: {} };
  if (token) init.headers['Authorization'] = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const code = json && (json.code || (json.error && json.error.code));
    const msg = json && (json.message || (json.error && json.error.message));
    throw new Error(`${res.status} ${code || ''} ${msg || text}`.trim());
  }
  return json;
}

function showError(e) {
  const msg = e && e.message ? e.message : String(e);
  state.errors.push(msg);
  $('error').textContent = msg;
}

async function loadConfig() {
  const cfg = await api('GET', '/demo/api/config');
  for (const t of cfg.titles) $('title').add(new Option(t.name, t.id));
  for (const d of cfg.devices) $('device').add(new Option(d.name, d.id));
  renderAppliances(cfg.appliances);
  setInterval(refreshAppliances, 2000);
}

async function refreshAppliances() {
  try { renderAppliances((await api('GET', '/demo/api/config')).appliances); } catch (_) { /* next tick */ }
}

function renderAppliances(list) {
  const body = $('appliances').tBodies[0];
  body.textContent = '';
  for (const a of list) {
    const tr = body.insertRow();
    tr.dataset.id = a.id;
    tr.insertCell().textContent = a.id;
    tr.insertCell().textContent = `${a.cluster} (${a.kind})`;
    const st = tr.insertCell();
    st.textContent = a.state;
    st.className = `state-${a.state}`;
    tr.insertCell().textContent = state.servedBy[a.id] || 0;
    const btn = document.createElement('button');
    const stopped = a.state === 'stopped';
    btn.textContent = stopped ? 'Restore' : 'Stop';
    btn.dataset.action = stopped ? 'restore' : 'stop';
    btn.onclick = async () => {
      btn.disabled = true;
      try { await api('POST', `/demo/api/appliances/${encodeURIComponent(a.id)}/${btn.dataset.action}`); }
      catch (e) { showError(e); }
      refreshAppliances();
    };
    tr.insertCell().appendChild(btn);
  }
}

// Grants expire; each heartbeat returns fresh ones, one per appliance. Every request URL is
// rewritten to carry the newest grant for its appliance (host:port), the way real apps refresh
// tokens, so playback runs past any number of grant lifetimes.
function rememberGrants(appliances) {
  state.grants = state.grants || {};
  for (const a of appliances || []) state.grants[new URL(a.base_url).host] = a.grant;
}

function freshUrl(url) {
  if (!state.grants) return url;
  try {
    const u = new URL(url, location.href);
    const parts = u.pathname.split('/');
    const grant = state.grants[u.host];
    if (parts[1] === 'g' && grant && parts[2] !== grant) {
      parts[2] = grant;
      u.pathname = parts.join('/');
      state.grantSwaps = (state.grantSwaps || 0) + 1;
      return u.toString();
    }
  } catch (_) { /* not a URL we rewrite */ }
  return url;
}

// The `iat` of the grant a URL carries (shown in tests: which grant fetched each segment).
function grantIat(url) {
  try {
    const seg = new URL(url, location.href).pathname.split('/')[2];
    const claims = seg.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(claims + '='.repeat((4 - claims.length % 4) % 4))).iat;
  } catch (_) { return null; }
}

function fileOf(url) {
  try {
    const p = new URL(url, location.href).pathname.split('/');
    // /g/<grant>/<title>/<rest...>
    return p[1] === 'g' ? p.slice(4).join('/') : p.slice(-2).join('/');
  } catch (_) { return url; }
}

function recordSegment(url, appliance, bytes) {
  if (!appliance) return;
  const entry = { t: new Date().toISOString().slice(11, 23), file: fileOf(url), appliance, bytes, grantIat: grantIat(url) };
  state.segments.push(entry);
  state.servedBy[appliance] = (state.servedBy[appliance] || 0) + 1;
  $('served-by').textContent = appliance;
  const tr = $('segments').tBodies[0].insertRow(0);
  for (const v of [entry.t, entry.file, entry.appliance, entry.bytes]) tr.insertCell().textContent = v;
  const row = document.querySelector(`#appliances tr[data-id="${CSS.escape(appliance)}"]`);
  if (row) row.cells[3].textContent = state.servedBy[appliance];
}

function recordSwitch(id) {
  if (state.switches[state.switches.length - 1] !== id) state.switches.push(id);
  $('rendition').textContent = `${id} (${state.switches.length - 1} switches)`;
}

function showSession(s) {
  $('session-id').textContent = s.session_id;
  $('tier').textContent = `${s.tier} (${s.renditions.join(', ')})`;
  $('lease').textContent = new Date(s.lease_expires_at * 1000).toLocaleTimeString();
  $('ranking').textContent = (s.appliances || []).map((a) => a.id).join(' → ') + (s.miss ? ` (${s.miss})` : '');
}

async function play() {
  $('error').textContent = '';
  await stopSession();
  const kind = $('player').value;
  const s = await api('POST', '/demo/api/sessions', {
    title: $('title').value, device: $('device').value, member: $('member').value,
  });
  state.session = s;
  state.ended = false;
  state.endedBy = null;
  state.atEndSince = null;
  state.grants = {};
  rememberGrants(s.appliances);
  showSession(s);
  $('license').textContent = s.license ? 'requested on first encrypted segment' : 'clear content (no licence needed)';
  $('stop').disabled = false;
  const video = $('video');
  state.textChoice = 'off';
  state.textVisible = false;
  state.thumbs = null;
  state.lastThumbnail = null;
  $('subtitles').value = 'off';
  if (kind === 'shaka') await playShaka(video, s);
  else if (kind === 'dash') await playDash(video, s);
  else playHls(video, s);
  $('timeline').disabled = false;
  video.loop = loop;
  // Playback over: give the stream back (a member's plan counts concurrent streams).
  video.addEventListener('ended', () => { state.ended = true; state.endedBy = 'event'; endLease(); }, { once: true });
  // A player that has played the last frame but never ends the media source leaves the
  // element waiting at the end without an 'ended' event (seen once with dash.js after a forced
  // switch replaced buffered segments): at the end and still there 1.5 s later counts as over.
  const atEnd = () => Number.isFinite(video.duration) && video.currentTime >= video.duration - 0.1;
  const endWatch = setInterval(() => {
    if (state.ended || state.session?.session_id !== s.session_id) { clearInterval(endWatch); return; }
    if (!atEnd()) { state.atEndSince = null; return; }
    state.atEndSince ??= Date.now();
    if (Date.now() - state.atEndSince >= 1500) {
      clearInterval(endWatch);
      state.ended = true;
      state.endedBy = 'position';
      endLease();
    }
  }, 250);
  video.addEventListener('playing', () => { state.started = true; });
  video.addEventListener('waiting', () => { if (state.started) state.stalls = (state.stalls || 0) + 1; });
  await video.play().catch(showError);
  const every = Math.max(5, s.heartbeat.interval_secs) * 1000;
  state.heartbeatTimer = setInterval(heartbeat, every);
}

async function heartbeat() {
  if (!state.session) return;
  try {
    const hb = await api('POST', state.session.heartbeat.url, undefined, state.session.token);
    $('lease').textContent = new Date(hb.lease_expires_at * 1000).toLocaleTimeString();
    rememberGrants(hb.appliances);
    state.heartbeats = (state.heartbeats || 0) + 1;
  } catch (e) { showError(e); }
}

async function playShaka(video, s) {
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  await player.attach(video);
  state.player = player; state.kind = 'shaka';
  const lic = s.license;
  player.configure({
    drm: lic ? { servers: { 'org.w3.clearkey': lic.url } } : {},
    streaming: Object.assign(
      { retryParameters: { maxAttempts: 4, baseDelay: 200, timeout: 4000 } },
      bufferSecs ? { bufferingGoal: bufferSecs, rebufferingGoal: 1, bufferBehind: bufferSecs } : {},
    ),
    manifest: { retryParameters: { maxAttempts: 4, baseDelay: 200 } },
    // The page shows the forced track itself (applyText), the same way for both players.
    accessibility: { handleForcedSubtitlesAutomatically: false },
    // QoE: CMCD in query mode (no CORS preflight); sid is the control plane's session id.
    cmcd: { enabled: true, useHeaders: false, sessionId: s.session_id, contentId: $('title').value },
  });
  const net = player.getNetworkingEngine();
  net.registerRequestFilter((type, req) => {
    if (state.swapGrants !== false) req.uris = req.uris.map(freshUrl);
    if (type === shaka.net.NetworkingEngine.RequestType.LICENSE && lic) {
      req.headers['Authorization'] = `Bearer ${s.token}`;
    }
  });
  net.registerResponseFilter((type, res) => {
    if (type === shaka.net.NetworkingEngine.RequestType.LICENSE) {
      // Clear Key licences are JSON Web Key sets: record which key ids this session received.
      try {
        const jwks = JSON.parse(new TextDecoder().decode(res.data));
        state.licenseKids = (state.licenseKids || []).concat(jwks.keys.map((k) => k.kid));
      } catch (_) { /* not JSON */ }
      $('license').textContent = `granted at ${new Date().toLocaleTimeString()} (${(state.licenseKids || []).length} keys)`;
    }
    if (type === shaka.net.NetworkingEngine.RequestType.SEGMENT) {
      recordSegment(res.uri, res.headers['outpost-appliance'], res.data ? res.data.byteLength : 0);
    }
  });
  player.addEventListener('error', (e) => {
    const d = e.detail;
    // BAD_HTTP_STATUS (1001) carries [uri, status, body, ...]: name the status and the body.
    const why = d.code === 1001 ? `HTTP ${d.data[1]}: ${String(d.data[2]).slice(0, 120)}` : JSON.stringify(d.data).slice(0, 200);
    showError(new Error(`shaka ${d.code}: ${why}`));
  });
  const onVariant = () => {
    const v = player.getVariantTracks().find((t) => t.active);
    if (v) recordSwitch(v.originalVideoId || `${v.height}p`);
  };
  player.addEventListener('variantchanged', onVariant);
  player.addEventListener('adaptation', onVariant);
  player.addEventListener('trackschanged', refreshTrackMenus);
  await player.load(s.manifests.dash);
  onVariant();
  refreshTrackMenus();
  applyText();
}

async function playDash(video, s) {
  const lic = s.license;
  const player = dashjs.MediaPlayer().create();
  state.player = player; state.kind = 'dash';
  // Clear Key: the manifest has one ContentProtection per AdaptationSet (one key each; the SD
  // and HD video sets name each other for switching); licences come from the control plane with
  // the session token.
  if (lic) {
    player.setProtectionData({
      'org.w3.clearkey': { serverURL: lic.url, httpRequestHeaders: { Authorization: `Bearer ${s.token}` } },
    });
    player.registerLicenseResponseFilter((res) => {
      // Clear Key licences are JSON Web Key sets: record which key ids this session received.
      try {
        const d = res.data;
        const jwks = typeof d === 'string' ? JSON.parse(d)
          : d instanceof ArrayBuffer || ArrayBuffer.isView(d) ? JSON.parse(new TextDecoder().decode(d)) : d;
        state.licenseKids = (state.licenseKids || []).concat(jwks.keys.map((k) => k.kid));
      } catch (_) { /* not JSON */ }
      $('license').textContent = `granted at ${new Date().toLocaleTimeString()} (${(state.licenseKids || []).length} keys)`;
      return Promise.resolve();
    });
  }
  player.updateSettings({
    streaming: {
      // QoE: CMCD in query mode (no CORS preflight); sid is the control plane's session id.
      cmcd: { enabled: true, mode: 'query', sid: s.session_id, cid: $('title').value },
      // Content steering from the session manifest's <ContentSteering> (dash.js's default).
      applyContentSteering: true,
      // Text starts off; the page picks the track (the forced one, or the chosen subtitles)
      // once dash.js has added its text tracks (applyText).
      text: { defaultEnabled: false },
      ...(bufferSecs ? { buffer: { bufferTimeDefault: bufferSecs, bufferTimeAtTopQuality: bufferSecs,
        bufferTimeAtTopQualityLongForm: bufferSecs, bufferToKeep: bufferSecs } } : {}),
    },
  });
  // The same grant refresh for every manifest and segment request; segments are logged with
  // the appliance that served them.
  player.addRequestInterceptor(async (req) => {
    if (state.swapGrants !== false) req.url = freshUrl(req.url);
    return req;
  });
  player.addResponseInterceptor(async (res) => {
    const r = res.request && res.request.customData && res.request.customData.request;
    if (r && r.type === 'MediaSegment' && res.status >= 200 && res.status < 300) {
      const h = res.headers || {};
      const who = h['outpost-appliance'] || h['Outpost-Appliance'] || null;
      recordSegment(res.url || res.request.url, who, res.data ? res.data.byteLength : 0);
    }
    return res;
  });
  const ev = dashjs.MediaPlayer.events;
  player.on(ev.ERROR, (e) => showError(new Error(`dash.js ${e.error && e.error.code}: ${e.error && e.error.message}`)));
  player.on(ev.PLAYBACK_ERROR, (e) => showError(new Error(`dash.js playback: ${e.error && e.error.message}`)));
  player.on(ev.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType === 'video' && e.newRepresentation) recordSwitch(e.newRepresentation.id);
  });
  player.on(ev.TRACK_CHANGE_RENDERED, refreshTrackMenus);
  player.on(ev.TEXT_TRACKS_ADDED, () => { applyText(); refreshTrackMenus(); });
  await new Promise((resolve) => {
    player.on(ev.STREAM_INITIALIZED, resolve);
    player.on(ev.ERROR, resolve);
    player.initialize(video, s.manifests.dash, false);
    // The audio language of the browser (English otherwise) to start with, as Shaka Player does.
    const lang = langKey(navigator.language) || 'en';
    player.setInitialMediaSettingsFor('audio', { lang });
    // And the text track to load first: the forced one in that language, which is what shows
    // with subtitles off. dash.js 5.2.1 switches its text track (its own forced-subtitle pick
    // included) while it sets the stream up, before the stream is active, and drops that switch:
    // it would go on loading the first text track of the manifest into the forced track's cues.
    player.setInitialMediaSettingsFor('text', { lang, role: { schemeIdUri: 'urn:mpeg:dash:role:2011', value: 'forced-subtitle' } });
  });
  const rep = player.getCurrentRepresentationForType('video');
  if (rep) recordSwitch(rep.id);
  refreshTrackMenus();
}

function playHls(video, s) {
  const lic = s.license;
  // An hls.js loader hook: the same grant refresh for every playlist and fragment request.
  const Base = Hls.DefaultConfig.loader;
  class GrantLoader extends Base {
    load(context, config, callbacks) {
      if (state.swapGrants !== false) context.url = freshUrl(context.url);
      super.load(context, config, callbacks);
    }
  }
  const hls = new Hls({
    loader: GrantLoader,
    ...(bufferSecs ? { maxBufferLength: bufferSecs, maxMaxBufferLength: bufferSecs, backBufferLength: bufferSecs } : {}),
    enableWorker: false,
    // QoE: CMCD in query mode (no CORS preflight); sid is the control plane's session id.
    cmcd: { useHeaders: false, sessionId: s.session_id, contentId: $('title').value },
    emeEnabled: !!lic,
    drmSystems: lic ? { 'org.w3.clearkey': { licenseUrl: lic.url } } : {},
    licenseXhrSetup: lic ? (xhr) => { xhr.setRequestHeader('Authorization', `Bearer ${s.token}`); } : undefined,
    fragLoadPolicy: { default: { maxTimeToFirstByteMs: 4000, maxLoadTimeMs: 10000,
      timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
      errorRetry: { maxNumRetry: 3, retryDelayMs: 200, maxRetryDelayMs: 1000 } } },
  });
  state.player = hls; state.kind = 'hls';
  hls.on(Hls.Events.FRAG_LOADED, (_e, data) => {
    const xhr = data.networkDetails;
    const who = xhr && xhr.getResponseHeader ? xhr.getResponseHeader('Outpost-Appliance') : null;
    recordSegment(data.frag.url, who, data.payload ? data.payload.byteLength : 0);
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => {
    const level = hls.levels[data.level];
    const uri = level && level.url && level.url[0];
    recordSwitch(uri ? fileOf(uri).split('/')[0] : `level ${data.level}`);
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => { refreshTrackMenus(); applyText(); });
  hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, refreshTrackMenus);
  hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, () => { reconcileText(); refreshTrackMenus(); });
  hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => { refreshTrackMenus(); applyText(); });
  hls.on(Hls.Events.SUBTITLE_TRACK_SWITCH, refreshTrackMenus);
  hls.on(Hls.Events.ERROR, (_e, data) => {
    if (data.fatal) showError(new Error(`hls.js ${data.type}: ${data.details}`));
  });
  hls.loadSource(s.manifests.hls);
  hls.attachMedia(video);
}

// ---- Audio language and subtitles, through each player's own API. ----

// Language tags compared by their primary subtag, two letters ('en', 'eng' and 'en-GB' match).
const langKey = (l) => String(l || '').toLowerCase().split('-')[0].slice(0, 2);

function audioLanguages() {
  const p = state.player;
  if (!p) return [];
  if (state.kind === 'shaka') return [...new Set(p.getAudioTracks().map((t) => t.language))];
  if (state.kind === 'dash') return [...new Set(p.getTracksFor('audio').map((t) => t.lang))];
  return [...new Set((p.audioTracks || []).map((t) => t.lang))];
}

function activeAudio() {
  const p = state.player;
  if (!p) return null;
  if (state.kind === 'shaka') {
    const v = p.getVariantTracks().find((t) => t.active);
    return v ? v.language : null;
  }
  if (state.kind === 'dash') {
    const t = p.getCurrentTrackFor('audio');
    return t ? t.lang : null;
  }
  const t = (p.audioTracks || [])[p.audioTrack];
  return t ? t.lang : null;
}

// Every text track as {lang, forced, select()}; forced tracks are never offered in the menu.
function textTracks() {
  const p = state.player;
  if (!p) return [];
  if (state.kind === 'shaka') {
    return p.getTextTracks().map((t) => ({ lang: t.language, forced: !!t.forced, active: t.active, raw: t }));
  }
  if (state.kind === 'dash') {
    // dash.js numbers its text tracks (setTextTrack) in manifest order, -1 being off.
    let now = -1;
    try { now = p.getCurrentTextTrackIndex(); } catch (_) { /* text tracks not added yet */ }
    return p.getTracksFor('text').slice().sort((a, b) => a.index - b.index).map((t, i) => ({
      lang: t.lang, forced: (t.roles || []).some((r) => r.value === 'forced-subtitle'), active: now === i, index: i,
    }));
  }
  return (p.subtitleTracks || []).map((t, i) => ({ lang: t.lang, forced: !!t.forced, active: p.subtitleTrack === i, index: i }));
}

// What is on screen: the active text track and whether it is shown.
function activeText() {
  const p = state.player;
  if (!p) return null;
  const t = textTracks().find((x) => x.active);
  // Shaka Player 5 has no visibility getter: selectTextTrack(null) hides text, so the page
  // remembers whether it last selected a track. dash.js shows its current text track (none: -1).
  const visible = state.kind === 'shaka' ? state.textVisible
    : state.kind === 'dash' ? true : p.subtitleTrack >= 0 && p.subtitleDisplay;
  return t && visible ? { lang: t.lang, forced: t.forced } : null;
}

function selectAudio(lang) {
  const p = state.player;
  if (!p) return;
  if (state.kind === 'shaka') {
    const t = p.getAudioTracks().find((a) => a.language === lang);
    if (t) p.selectAudioTrack(t);
  } else if (state.kind === 'dash') {
    const t = p.getTracksFor('audio').find((a) => a.lang === lang);
    if (t) p.setCurrentTrack(t);
  } else {
    const i = p.audioTracks.findIndex((t) => t.lang === lang);
    if (i >= 0) p.audioTrack = i;
  }
  // Forced signs follow the audio language.
  applyText();
  refreshTrackMenus();
}

// Shows the chosen subtitles; with subtitles off, the forced track in the audio language if
// there is one (signs and foreign dialogue a viewer needs without asking for subtitles).
function wantedText() {
  const all = textTracks();
  return state.textChoice === 'off'
    ? all.find((t) => t.forced && langKey(t.lang) === langKey(activeAudio()))
    : all.find((t) => !t.forced && t.lang === state.textChoice);
}

// Re-applies the choice when what is shown differs from it: the players pick their own tracks
// while loading (hls.js only knows its audio track once the audio playlist is in), so the page
// checks again on track events and twice a second.
function reconcileText() {
  const p = state.player;
  if (!p) return;
  const want = wantedText();
  const now = textTracks().find((t) => t.active);
  const shown = activeText();
  const ok = want ? !!(shown && now && now.lang === want.lang && now.forced === want.forced) : !shown;
  if (!ok) applyText();
}

function applyText() {
  const p = state.player;
  if (!p) return;
  const pick = wantedText();
  if (state.kind === 'shaka') {
    // Shaka Player 5: selecting a track shows it, selecting null hides text.
    p.selectTextTrack(pick ? pick.raw : null);
    state.textVisible = !!pick;
  } else if (state.kind === 'dash') {
    // dash.js 5: setTextTrack(-1) turns text off (and then shows a forced track in the audio
    // language by itself, which is what the page wants too); it throws before playback starts.
    try { p.setTextTrack(pick ? pick.index : -1); } catch (_) { /* not yet: reconcileText retries */ }
  } else {
    p.subtitleDisplay = !!pick;
    p.subtitleTrack = pick ? pick.index : -1;
  }
}

function refreshTrackMenus() {
  const audio = $('audio');
  const langs = audioLanguages();
  if ([...audio.options].map((o) => o.value).join() !== langs.join()) {
    audio.textContent = '';
    for (const l of langs) audio.add(new Option(l, l));
  }
  const now = activeAudio();
  if (now) audio.value = now;
  audio.disabled = langs.length === 0;
  const subs = $('subtitles');
  const offered = [...new Set(textTracks().filter((t) => !t.forced).map((t) => t.lang))];
  if ([...subs.options].slice(1).map((o) => o.value).join() !== offered.join()) {
    while (subs.options.length > 1) subs.remove(1);
    for (const l of offered) subs.add(new Option(l, l));
  }
  subs.value = state.textChoice;
  subs.disabled = offered.length === 0;
  const t = activeText();
  $('tracks-now').textContent = `${now || '–'} / ${t ? `${t.lang}${t.forced ? ' (forced)' : ''}` : 'off'}`;
}

$('audio').onchange = (e) => selectAudio(e.target.value);
$('subtitles').onchange = (e) => {
  state.textChoice = e.target.value;
  applyText();
  refreshTrackMenus();
};
Object.assign(state, { audioLanguages, activeAudio, activeText, textTracks });

// ---- Thumbnails on the timeline. ----
// Shaka Player reads the image track of both DASH and HLS itself (getThumbnails). hls.js has no
// thumbnail API, so for it this page reads the session's HLS master playlist once: the
// EXT-X-IMAGE-STREAM-INF names the image playlist, whose EXT-X-TILES give each grid image's
// thumbnail size, layout and per-thumbnail duration. Either way the tile URL carries the
// appliance's newest grant (the same refresh as for segments).

function resolve(uri, base) { return new URL(uri, base).toString(); }

async function hlsImageTrack() {
  if (state.thumbs) return state.thumbs;
  const masterUrl = freshUrl(state.session.manifests.hls);
  const master = await (await fetch(masterUrl)).text();
  const inf = master.split('\n').find((l) => l.startsWith('#EXT-X-IMAGE-STREAM-INF:'));
  const m = inf && inf.match(/URI="([^"]+)"/);
  if (!m) return (state.thumbs = { tiles: [] });
  const listUrl = resolve(m[1], masterUrl);
  const lines = (await (await fetch(freshUrl(listUrl))).text()).split('\n').map((l) => l.trim());
  const tiles = [];
  let start = 0; let tile = null; let dur = 0;
  for (const l of lines) {
    if (l.startsWith('#EXT-X-TILES:')) {
      const res = l.match(/RESOLUTION=(\d+)x(\d+)/); const lay = l.match(/LAYOUT=(\d+)x(\d+)/);
      const d = l.match(/DURATION=([\d.]+)/);
      tile = { w: +res[1], h: +res[2], cols: +lay[1], rows: +lay[2], each: +d[1] };
    } else if (l.startsWith('#EXTINF:')) {
      dur = parseFloat(l.slice(8));
    } else if (l && !l.startsWith('#') && tile) {
      tiles.push({ ...tile, start, dur, uri: resolve(l, listUrl) });
      start += dur;
    }
  }
  return (state.thumbs = { tiles });
}

// The thumbnail for `time` seconds: {url, x, y, width, height, start, duration} or null.
async function thumbnailAt(time) {
  const p = state.player;
  if (!p || !state.session) return null;
  if (state.kind === 'shaka') {
    const img = p.getImageTracks()[0];
    if (!img) return null;
    const t = await p.getThumbnails(img.id, time);
    if (!t) return null;
    return { url: freshUrl(t.uris[0]), x: t.positionX, y: t.positionY, width: t.width, height: t.height,
      start: t.startTime, duration: t.duration };
  }
  const { tiles } = await hlsImageTrack();
  const g = tiles.find((x) => time >= x.start && time < x.start + x.dur) || tiles[tiles.length - 1];
  if (!g) return null;
  const i = Math.min(Math.floor((time - g.start) / g.each), g.cols * g.rows - 1);
  return { url: freshUrl(g.uri), x: (i % g.cols) * g.w, y: Math.floor(i / g.cols) * g.h, width: g.w, height: g.h,
    start: g.start + i * g.each, duration: g.each };
}
state.thumbnailAt = thumbnailAt;

function timelineTime(e) {
  const r = $('timeline').getBoundingClientRect();
  const f = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  const d = $('video').duration;
  return { f, time: Number.isFinite(d) ? f * d : 0 };
}

async function showThumbnail(e) {
  const { f, time } = timelineTime(e);
  try {
    const t = await thumbnailAt(time);
    if (!t) return;
    state.lastThumbnail = { ...t, time };
    const box = $('thumb');
    const img = $('thumb-img');
    img.style.width = `${t.width}px`;
    img.style.height = `${t.height}px`;
    img.style.backgroundImage = `url("${t.url}")`;
    img.style.backgroundPosition = `-${t.x}px -${t.y}px`;
    $('thumb-time').textContent = `${time.toFixed(1)} s`;
    box.style.left = `${f * 100}%`;
    box.hidden = false;
  } catch (err) { showError(err); }
}
$('timeline').addEventListener('mousemove', showThumbnail);
$('timeline').addEventListener('mouseleave', () => { $('thumb').hidden = true; });
$('timeline').addEventListener('input', (e) => {
  const v = $('video');
  if (Number.isFinite(v.duration)) v.currentTime = (e.target.value / 1000) * v.duration;
});

async function endLease() {
  const s = state.session;
  if (!s || s.leaseEnded) return;
  s.leaseEnded = true;
  clearInterval(state.heartbeatTimer);
  try {
    await api('DELETE', `/v1/playback/sessions/${s.session_id}`, undefined, s.token);
    $('lease').textContent = 'ended';
  } catch (_) { /* already lapsed */ }
}

// Leaving the page ends the session too (same origin, so a keepalive DELETE needs no preflight).
window.addEventListener('pagehide', () => {
  const s = state.session;
  if (s && !s.leaseEnded) {
    fetch(`/v1/playback/sessions/${s.session_id}`, {
      method: 'DELETE', keepalive: true, headers: { Authorization: `Bearer ${s.token}` },
    }).catch(() => {});
  }
});

async function stopSession() {
  clearInterval(state.heartbeatTimer);
  if (state.player) {
    try { await state.player.destroy(); } catch (_) { /* already gone */ }
    state.player = null;
  }
  if (state.session) {
    await endLease();
    state.session = null;
  }
  $('stop').disabled = true;
}

setInterval(() => {
  const v = $('video');
  let ahead = 0;
  for (let i = 0; i < v.buffered.length; i++) {
    if (v.buffered.start(i) <= v.currentTime && v.currentTime <= v.buffered.end(i)) ahead = v.buffered.end(i) - v.currentTime;
  }
  state.bufferAhead = ahead;
  $('buffer').textContent = `${ahead.toFixed(1)} s`;
  $('position').textContent = `${v.currentTime.toFixed(1)} / ${Number.isFinite(v.duration) ? v.duration.toFixed(1) : '–'} s`;
  const tl = $('timeline');
  if (Number.isFinite(v.duration) && document.activeElement !== tl) tl.value = Math.round((v.currentTime / v.duration) * 1000);
  if (state.player) { reconcileText(); refreshTrackMenus(); }
}, 500);

// QoE: this session as the appliances reported it (CMCD folded per appliance, GET /v1/qoe).
async function refreshQoe() {
  const s = state.session;
  if (!s) return;
  try {
    const res = await fetch('/v1/qoe');
    if (!res.ok) { $('qoe').textContent = `GET /v1/qoe: ${res.status}`; return; }
    const rows = (await res.json()).sessions.filter((r) => r.session.sid === s.session_id);
    state.qoe = rows;
    $('qoe').textContent = rows.length ? rows.map((r) => {
      const q = r.session;
      return [r.appliance_id, q.startup_ms == null ? null : `startup ${q.startup_ms} ms`,
        `${q.starvation_events} stalls`, q.avg_bitrate_kbps == null ? null : `${q.avg_bitrate_kbps} kb/s`,
        q.buffer_ms == null ? null : `buffer ${(q.buffer_ms / 1000).toFixed(1)} s`].filter(Boolean).join(' · ');
    }).join('; ') : 'waiting for the next appliance heartbeat';
  } catch (_) { /* next tick */ }
}
setInterval(refreshQoe, 3000);

$('play').onclick = () => play().catch(showError);
$('stop').onclick = () => stopSession().catch(showError);
loadConfig().catch(showError);
