//! IMSC1 / TTML input: the IMSC1 Text Profile subset real subtitle files use: `tt`, `head`
//! (`styling`, `layout`, kept verbatim), `body`, `div`, `p`, `span`, `br`; `begin`, `end` and `dur`
//! on `body`, `div` and `p` in clock-time (`hh:mm:ss.fff`, `hh:mm:ss:ff`) or offset-time (`1.5s`,
//! `250ms`, `40f`, `900000t`, `h`, `m`) with `ttp:frameRate`, `ttp:frameRateMultiplier`,
//! `ttp:subFrameRate` and `ttp:tickRate`; `xml:lang` on `tt` as the default language.
//!
//! Each `p` is a cue. Times resolve to integer milliseconds on the title's timeline (parent
//! `begin`s add up; a parent's `end` cuts its children short), rounded to the nearest
//! millisecond when a frame or tick is not a whole number of them. The cues keep their raw
//! markup (attributes, `span`s, `br`s) for IMSC1 in MP4 ([`Ttml::document`]) and get a plain
//! WebVTT payload for the HLS WebVTT playlists ([`Ttml::to_webvtt`]).
//!
//! Refused, naming the file, the line and the cue: XML that does not parse, an unknown root,
//! `ttp:timeBase` other than `media`, a malformed time, a cue without an end, an end not after
//! the begin, overlapping cues, a cue ending past the end of the title, timing on a `span`.

use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{Cue, WebVtt, MAX_TEXT_BYTES};
use crate::error::{Error, Result};

/// One `p` cue of a TTML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtmlCue {
    /// Resolved begin, milliseconds.
    pub start_ms: u64,
    /// Resolved end, milliseconds.
    pub end_ms: u64,
    /// `xml:id`, when present.
    pub id: Option<String>,
    /// The start tags of the enclosing `div`s (outermost first), timing attributes removed,
    /// with their element names for the end tags.
    pub parents: Vec<(String, String)>,
    /// The `p` element name (`p` or `tt:p`).
    pub name: String,
    /// The `p` attributes, raw, without `begin`, `end` and `dur`.
    pub attrs: String,
    /// The raw content of the `p` (text, `span`s, `br`s).
    pub inner: String,
    /// Plain text of the cue: `br` as a line break, whitespace collapsed, WebVTT-escaped.
    pub text: String,
    /// 1-based line of the `p` start tag.
    pub line: usize,
}

/// A parsed TTML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttml {
    /// `xml:lang` of `tt`, when present and not empty.
    pub language: Option<String>,
    /// The `tt` start tag, raw (namespace declarations, parameters, `xml:lang`).
    pub tt_open: String,
    /// The `tt` element name (`tt` or a prefixed name).
    pub tt_name: String,
    /// The whole `head` element, raw (styling, layout), or empty.
    pub head: String,
    /// The `body` start tag without timing attributes, and the element name.
    pub body: (String, String),
    /// Cues in order of begin.
    pub cues: Vec<TtmlCue>,
}

/// Time parameters of the document (`ttp:*` on `tt`).
#[derive(Debug, Clone, Copy)]
struct Rates {
    /// Effective frame rate as a fraction: frameRate * multiplier.
    frame_num: u128,
    frame_den: u128,
    sub_frame_rate: u128,
    tick_rate: u128,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            frame_num: 30,
            frame_den: 1,
            sub_frame_rate: 1,
            tick_rate: 1,
        }
    }
}

/// A time in seconds as an exact fraction.
#[derive(Debug, Clone, Copy)]
struct Secs {
    num: u128,
    den: u128,
}

impl Secs {
    fn ms(self) -> Option<u64> {
        let n = self.num.checked_mul(1000)?.checked_add(self.den / 2)?;
        u64::try_from(n / self.den).ok()
    }
}

/// Parses a decimal `123` or `12.345` as a fraction.
fn decimal(s: &str) -> Option<Secs> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
        || int.len() + frac.len() > 30
    {
        return None;
    }
    let den = 10u128.checked_pow(frac.len() as u32)?;
    let num = format!("{int}{frac}").parse::<u128>().ok()?;
    Some(Secs { num, den })
}

/// Parses a TTML time expression (clock-time or offset-time) into milliseconds.
fn parse_time(s: &str, r: &Rates) -> Option<u64> {
    let s = s.trim();
    let parts: Vec<&str> = s.split(':').collect();
    let two = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
    let secs = match parts.as_slice() {
        [h, m, sec] | [h, m, sec, _] if h.len() >= 2 && two(m) => {
            let hours: u128 = h
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| h.parse().ok())??;
            let minutes: u128 = m.parse().ok()?;
            // Checked: a time past u64 milliseconds is refused, never wrapped.
            let whole = hours.checked_mul(3600)?.checked_add(minutes * 60)?;
            if parts.len() == 3 {
                // hh:mm:ss(.fraction)
                let (si, _) = sec.split_once('.').unwrap_or((sec, ""));
                if !two(si) {
                    return None;
                }
                let d = decimal(sec)?;
                Secs {
                    num: whole.checked_mul(d.den)?.checked_add(d.num)?,
                    den: d.den,
                }
            } else {
                // hh:mm:ss:frames(.subframes)
                if !two(sec) {
                    return None;
                }
                let ss: u128 = sec.parse().ok()?;
                let (f, sub) = match parts[3].split_once('.') {
                    Some((f, sub)) => (f, Some(sub)),
                    None => (parts[3], None),
                };
                if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let frames: u128 = f.parse().ok()?;
                let subs: u128 = match sub {
                    Some(x) if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) => {
                        x.parse().ok()?
                    }
                    Some(_) => return None,
                    None => 0,
                };
                // seconds = whole + ss + (frames + subs / sub_rate) / (frame_num / frame_den)
                let den = r.frame_num.checked_mul(r.sub_frame_rate)?;
                let sub_frames = frames
                    .checked_mul(r.sub_frame_rate)?
                    .checked_add(subs)?
                    .checked_mul(r.frame_den)?;
                let num = (whole + ss).checked_mul(den)?.checked_add(sub_frames)?;
                Secs { num, den }
            }
        }
        [one] => {
            let k = one.find(|c: char| c.is_ascii_alphabetic())?;
            let (n, metric) = one.split_at(k);
            let d = decimal(n)?;
            let (mul, div) = match metric {
                "h" => (3600, 1),
                "m" => (60, 1),
                "s" => (1, 1),
                "ms" => (1, 1000),
                "f" => (r.frame_den, r.frame_num),
                "t" => (1, r.tick_rate),
                _ => return None,
            };
            Secs {
                num: d.num.checked_mul(mul)?,
                den: d.den.checked_mul(div)?,
            }
        }
        _ => return None,
    };
    secs.ms()
}

/// `hh:mm:ss.mmm`, a TTML clock-time.
pub fn clock_time(ms: u64) -> String {
    super::format_time(ms)
}

/// Line numbers of increasing byte positions, counted incrementally (one pass over the text
/// however many events the document has).
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Lines<'_> {
    /// The line (from 1) of byte `pos`, which is not before the previous one asked.
    fn at(&mut self, pos: usize) -> usize {
        let pos = pos.min(self.text.len());
        if pos < self.pos {
            return line_of(self.text, pos);
        }
        self.line += self.text.as_bytes()[self.pos..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = pos;
        self.line
    }
}

/// The line of byte `pos` of `text`, from 1.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b':') {
        Some(k) => &name[k + 1..],
        None => name,
    }
}

/// Timing attributes of an element: (begin, end, dur) raw values.
type Timing = (Option<String>, Option<String>, Option<String>);

/// Splits the attributes of `e` into timing and the rest (raw, re-serialised).
fn split_attrs(e: &BytesStart<'_>) -> std::result::Result<(Timing, String), String> {
    let mut timing: Timing = (None, None, None);
    let mut rest = String::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("malformed attribute: {e}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let raw = String::from_utf8_lossy(&a.value).into_owned();
        let value = || {
            a.unescape_value()
                .map(|v| v.into_owned())
                .map_err(|e| format!("attribute {key}: {e}"))
        };
        match key.as_str() {
            "begin" => timing.0 = Some(value()?),
            "end" => timing.1 = Some(value()?),
            "dur" => timing.2 = Some(value()?),
            _ => {
                let q = if raw.contains('"') { '\'' } else { '"' };
                rest.push_str(&format!(" {key}={q}{raw}{q}"));
            }
        }
    }
    Ok((timing, rest))
}

fn attr(e: &BytesStart<'_>, want_local: &[u8], want_prefix: Option<&[u8]>) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        let k = a.key.as_ref();
        let prefix_ok = match want_prefix {
            Some(p) => k.strip_prefix(p).is_some_and(|r| r.first() == Some(&b':')),
            None => true,
        };
        (local(k) == want_local && prefix_ok)
            .then(|| a.unescape_value().ok().map(|v| v.into_owned()))
            .flatten()
    })
}

/// A rate parameter: a positive integer below 2^32, so products of two or three of them (the
/// effective frame rate, ticks from frames and sub-frames) cannot overflow `u128`.
fn positive(s: &str) -> Option<u128> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&v| v > 0)
        .map(u128::from)
}

/// A time container on the stack: its element, resolved begin and end (ms), raw start tag.
struct Container {
    local: Vec<u8>,
    name: String,
    begin: u64,
    end: Option<u64>,
    open: String,
    depth: usize,
}

/// Parses `text` (the contents of `file`): the IMSC1 subset described in the module docs.
/// Every cue must end by `duration_ms` (the end of the title).
pub fn parse(file: &Path, text: &str, duration_ms: u64) -> Result<Ttml> {
    let err = |line: usize, cue: &str, reason: String| Error::Text {
        file: file.to_path_buf(),
        line,
        cue: cue.to_string(),
        reason,
    };
    if text.len() > MAX_TEXT_BYTES {
        return Err(err(
            0,
            "document",
            format!("larger than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    // A byte-order mark is not part of the document: without it, the reader's byte positions
    // index `text` (the raw start tags are sliced out of it).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut rates = Rates::default();
    let mut out = Ttml {
        language: None,
        tt_open: String::new(),
        tt_name: String::new(),
        head: String::new(),
        body: (String::new(), String::new()),
        cues: Vec::new(),
    };
    let mut stack: Vec<Container> = Vec::new();
    let mut depth = 0usize; // element depth
    let mut head_start: Option<(usize, usize)> = None; // byte position, depth
    let mut saw_root = false;
    // The p being read: its cue, the depth of the p, the byte position after its start tag,
    // the plain text so far and the depth of an ignored metadata element.
    struct Open {
        cue: TtmlCue,
        depth: usize,
        inner_from: usize,
        plain: String,
        skip: Option<usize>,
    }
    let mut open: Option<Open> = None;
    let mut count = 0usize;
    let mut lines = Lines {
        text,
        pos: 0,
        line: 1,
    };
    loop {
        let before = reader.buffer_position() as usize;
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = reader.error_position() as usize;
                let cue = open
                    .as_ref()
                    .map_or("document".to_string(), |o| cue_name(count, &o.cue.id));
                return Err(err(
                    line_of(text, at),
                    &cue,
                    format!("not well-formed XML: {e}"),
                ));
            }
        };
        let after = reader.buffer_position() as usize;
        let line = lines.at(before);
        let (start, empty) = match &ev {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if !saw_root {
            // Before the root element only the prolog may stand: the XML declaration, comments,
            // processing instructions, a DOCTYPE and white space.
            if let Event::Text(t) = &ev {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(err(
                        line,
                        "document",
                        "not well-formed XML: text before the root element".into(),
                    ));
                }
            }
        }
        if let Some(e) = start {
            let qname = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            let lname = local(e.name().as_ref()).to_vec();
            // Every attribute must be well formed, read or not (the raw start tags are copied
            // into the stpp documents).
            if let Some(Err(a)) = e.attributes().find(Result::is_err) {
                return Err(err(
                    line,
                    "document",
                    format!("not well-formed XML: <{qname}>: malformed attribute: {a}"),
                ));
            }
            if !empty {
                depth += 1;
            }
            if !saw_root {
                saw_root = true;
                if lname != b"tt" {
                    return Err(err(
                        line,
                        "document",
                        format!("the root element is <{qname}>, not <tt>: not a TTML document"),
                    ));
                }
                if let Some(tb) = attr(&e, b"timeBase", Some(b"ttp")) {
                    if tb != "media" {
                        return Err(err(
                            line,
                            "document",
                            format!("ttp:timeBase=\"{tb}\": only \"media\" is supported (IMSC1)"),
                        ));
                    }
                }
                let bad_param = |name: &str, v: &str| {
                    err(
                        line,
                        "document",
                        format!(
                            "ttp:{name}=\"{v}\" is not a positive integer of at most {}",
                            u32::MAX
                        ),
                    )
                };
                if let Some(v) = attr(&e, b"frameRate", Some(b"ttp")) {
                    rates.frame_num = positive(&v).ok_or_else(|| bad_param("frameRate", &v))?;
                    rates.tick_rate = rates.frame_num;
                }
                if let Some(v) = attr(&e, b"subFrameRate", Some(b"ttp")) {
                    rates.sub_frame_rate =
                        positive(&v).ok_or_else(|| bad_param("subFrameRate", &v))?;
                    rates.tick_rate = rates.frame_num * rates.sub_frame_rate; // both < 2^32
                }
                if let Some(v) = attr(&e, b"frameRateMultiplier", Some(b"ttp")) {
                    let mut it = v.split_whitespace();
                    match (
                        it.next().and_then(positive),
                        it.next().and_then(positive),
                        it.next(),
                    ) {
                        (Some(n), Some(d), None) => {
                            rates.frame_num *= n;
                            rates.frame_den *= d;
                        }
                        _ => {
                            return Err(err(
                                line,
                                "document",
                                format!(
                                    "ttp:frameRateMultiplier=\"{v}\" is not two positive integers \
                                     of at most {}",
                                    u32::MAX
                                ),
                            ))
                        }
                    }
                }
                if let Some(v) = attr(&e, b"tickRate", Some(b"ttp")) {
                    rates.tick_rate = positive(&v).ok_or_else(|| bad_param("tickRate", &v))?;
                }
                out.language = attr(&e, b"lang", Some(b"xml")).filter(|l| !l.trim().is_empty());
                out.tt_open = text[before..after].to_string();
                out.tt_name = qname;
                if empty {
                    break;
                }
                continue;
            }
            if let Some(o) = open.as_mut() {
                // Inside a p: span, br, metadata.
                if o.skip.is_some() {
                    continue;
                }
                match lname.as_slice() {
                    b"br" => o.plain.push('\n'),
                    b"span" => {
                        let (t, _) = split_attrs(&e)
                            .map_err(|r| err(line, &cue_name(count, &o.cue.id), r))?;
                        if t != (None, None, None) {
                            return Err(err(
                                line,
                                &cue_name(count, &o.cue.id),
                                "timing (begin/end/dur) on a <span> is not supported: time the <p>"
                                    .into(),
                            ));
                        }
                    }
                    b"metadata" if !empty => o.skip = Some(depth),
                    _ => {}
                }
                continue;
            }
            if head_start.is_some() {
                continue;
            }
            match lname.as_slice() {
                b"head" => {
                    if empty {
                        out.head = text[before..after].to_string();
                    } else {
                        head_start = Some((before, depth));
                    }
                }
                b"body" | b"div" | b"p" => {
                    let (timing, rest) = split_attrs(&e).map_err(|r| {
                        let what = if lname == b"p" {
                            cue_name(count + 1, &None)
                        } else {
                            format!("<{qname}>")
                        };
                        err(line, &what, r)
                    })?;
                    let (pb, pe) = stack
                        .last()
                        .map_or((0, None), |c: &Container| (c.begin, c.end));
                    let is_p = lname == b"p";
                    if is_p {
                        count += 1;
                    }
                    let id = attr(&e, b"id", Some(b"xml"));
                    let what = if is_p {
                        cue_name(count, &id)
                    } else {
                        format!("<{qname}>")
                    };
                    let time = |v: &Option<String>, which: &str| -> Result<Option<u64>> {
                        v.as_deref()
                            .map(|s| {
                                parse_time(s, &rates).ok_or_else(|| {
                                    err(
                                        line,
                                        &what,
                                        format!(
                                            "{which}=\"{s}\" is not a TTML time (hh:mm:ss.fff, hh:mm:ss:ff or a number with h, m, s, ms, f or t)"
                                        ),
                                    )
                                })
                            })
                            .transpose()
                    };
                    let b = time(&timing.0, "begin")?.unwrap_or(0);
                    let e_rel = time(&timing.1, "end")?;
                    let d_rel = time(&timing.2, "dur")?;
                    let begin = pb + b;
                    let mut end = match (e_rel, d_rel) {
                        (Some(x), Some(d)) => Some((pb + x).min(begin + d)),
                        (Some(x), None) => Some(pb + x),
                        (None, Some(d)) => Some(begin + d),
                        (None, None) => None,
                    };
                    if let (Some(x), Some(p)) = (end, pe) {
                        end = Some(x.min(p));
                    }
                    if let Some(x) = end.or(pe) {
                        if x <= begin && (is_p || e_rel.is_some() || d_rel.is_some()) {
                            return Err(err(
                                line,
                                &what,
                                format!(
                                    "ends at {} but begins at {}: the end must be after the begin",
                                    clock_time(x),
                                    clock_time(begin)
                                ),
                            ));
                        }
                    }
                    if end.is_none() {
                        end = pe;
                    }
                    let open_tag = format!("<{qname}{rest}>");
                    if is_p {
                        let Some(end) = end else {
                            return Err(err(
                                line,
                                &what,
                                "no end: give the <p> (or an enclosing div/body) end or dur".into(),
                            ));
                        };
                        if end > duration_ms {
                            return Err(err(
                                line,
                                &what,
                                format!(
                                    "ends at {}, past the end of the title at {}",
                                    clock_time(end),
                                    clock_time(duration_ms)
                                ),
                            ));
                        }
                        let cue = TtmlCue {
                            start_ms: begin,
                            end_ms: end,
                            id,
                            parents: stack
                                .iter()
                                .filter(|c| c.local == b"div")
                                .map(|c| (c.open.clone(), c.name.clone()))
                                .collect(),
                            name: qname,
                            attrs: rest,
                            inner: String::new(),
                            text: String::new(),
                            line,
                        };
                        if empty {
                            // An empty p shows nothing: not a cue.
                            continue;
                        }
                        open = Some(Open {
                            cue,
                            depth,
                            inner_from: after,
                            plain: String::new(),
                            skip: None,
                        });
                    } else {
                        if lname == b"body" {
                            out.body = (open_tag.clone(), qname.clone());
                        }
                        if !empty {
                            stack.push(Container {
                                local: lname.clone(),
                                name: qname,
                                begin,
                                end,
                                open: open_tag,
                                depth,
                            });
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match ev {
            Event::End(_) => {
                let closing = depth;
                depth = depth.saturating_sub(1);
                if let Some((from, d)) = head_start {
                    if d == closing {
                        out.head = text[from..after].to_string();
                        head_start = None;
                    }
                    continue;
                }
                if let Some(o) = open.as_mut() {
                    if o.skip == Some(closing) {
                        o.skip = None;
                        continue;
                    }
                    if o.depth == closing {
                        let mut o = open.take().expect("open p");
                        o.cue.inner = text[o.inner_from..before].to_string();
                        o.cue.text = plain_text(&o.plain);
                        if !o.cue.text.is_empty() {
                            out.cues.push(o.cue);
                        }
                    }
                    continue;
                }
                if stack.last().is_some_and(|c| c.depth == closing) {
                    stack.pop();
                }
            }
            Event::Text(t) => {
                if let Some(o) = open.as_mut() {
                    if o.skip.is_none() {
                        let s = t.unescape().map_err(|e| {
                            err(
                                line,
                                &cue_name(count, &o.cue.id),
                                format!("bad character reference: {e}"),
                            )
                        })?;
                        // Source line breaks are white space; only <br/> breaks a line.
                        o.plain
                            .extend(s.chars().map(|c| if c.is_whitespace() { ' ' } else { c }));
                    }
                }
            }
            Event::CData(t) => {
                if let Some(o) = open.as_mut() {
                    if o.skip.is_none() {
                        o.plain.extend(String::from_utf8_lossy(&t).chars().map(|c| {
                            if c.is_whitespace() {
                                ' '
                            } else {
                                c
                            }
                        }));
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(err(
            1,
            "document",
            "no <tt> element: an empty document".into(),
        ));
    }
    if depth != 0 {
        return Err(err(
            line_of(text, text.len()),
            "document",
            "not well-formed XML: the document ends inside an element".into(),
        ));
    }
    // Order by begin (document order breaks ties) and refuse overlaps.
    let mut numbered: Vec<(usize, TtmlCue)> = out.cues.drain(..).enumerate().collect();
    numbered.sort_by_key(|(n, c)| (c.start_ms, *n));
    for w in numbered.windows(2) {
        let ((pn, p), (n, c)) = (&w[0], &w[1]);
        if c.start_ms < p.end_ms {
            return Err(err(
                c.line,
                &cue_name(n + 1, &c.id),
                format!(
                    "begins at {}, before {} (line {}) ends at {}: overlapping cues are refused",
                    clock_time(c.start_ms),
                    cue_name(pn + 1, &p.id),
                    p.line,
                    clock_time(p.end_ms)
                ),
            ));
        }
    }
    out.cues = numbered.into_iter().map(|(_, c)| c).collect();
    Ok(out)
}

fn cue_name(n: usize, id: &Option<String>) -> String {
    match id {
        Some(id) => format!("cue {n} ({id:?})"),
        None => format!("cue {n}"),
    }
}

/// XML whitespace handling (`xml:space="default"`): runs of white space collapse to one space,
/// lines (from `br`) are trimmed, empty lines dropped; then WebVTT escaping.
fn plain_text(s: &str) -> String {
    s.split('\n')
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Ttml {
    /// The cues as WebVTT (for the HLS playlists and the sidecar): same times, plain text.
    pub fn to_webvtt(&self) -> WebVtt {
        WebVtt {
            header_blocks: Vec::new(),
            cues: self
                .cues
                .iter()
                .map(|c| Cue {
                    // An xml:id may be anything: one that WebVTT would not read back as a cue
                    // identifier ("-->", a line break, "NOTE ...", which would make the cue a
                    // comment) is left out.
                    id: c.id.clone().filter(|id| super::is_cue_identifier(id)),
                    start_ms: c.start_ms,
                    end_ms: c.end_ms,
                    settings: String::new(),
                    payload: c.text.clone(),
                })
                .collect(),
        }
    }

    /// A TTML document holding `cues` (a subset of [`Ttml::cues`]) with their times written as
    /// clock-times on the title timeline: the `tt` start tag and `head` of the input, then
    /// `body`, the enclosing `div`s and each `p` with its markup.
    pub fn document<'a>(&self, cues: impl IntoIterator<Item = &'a TtmlCue>) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str(&self.tt_open);
        s.push_str(&self.head);
        let (body_open, body_name) = if self.body.1.is_empty() {
            ("<body>".to_string(), "body".to_string())
        } else {
            self.body.clone()
        };
        s.push_str(&body_open);
        let mut current: Option<&Vec<(String, String)>> = None;
        let close = |s: &mut String, parents: &Vec<(String, String)>| {
            for (_, name) in parents.iter().rev() {
                s.push_str(&format!("</{name}>"));
            }
        };
        let mut any = false;
        for c in cues {
            any = true;
            if current != Some(&c.parents) {
                if let Some(p) = current {
                    close(&mut s, p);
                }
                for (open, _) in &c.parents {
                    s.push_str(open);
                }
                current = Some(&c.parents);
            }
            s.push_str(&format!(
                "<{}{} begin=\"{}\" end=\"{}\">{}</{}>",
                c.name,
                c.attrs,
                clock_time(c.start_ms),
                clock_time(c.end_ms),
                c.inner,
                c.name
            ));
        }
        if let Some(p) = current {
            close(&mut s, p);
        }
        if !any {
            s.push_str("<div/>");
        }
        s.push_str(&format!("</{body_name}></{}>\n", self.tt_name));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_expressions() {
        let r = Rates::default();
        assert_eq!(parse_time("00:00:01.5", &r), Some(1500));
        assert_eq!(parse_time("01:02:03.004", &r), Some(3_723_004));
        assert_eq!(parse_time("1.25s", &r), Some(1250));
        assert_eq!(parse_time("250ms", &r), Some(250));
        assert_eq!(parse_time("2m", &r), Some(120_000));
        assert_eq!(parse_time("15f", &r), Some(500));
        assert_eq!(parse_time("00:00:01:15", &r), Some(1500));
        let r25 = Rates {
            frame_num: 25,
            tick_rate: 10_000_000,
            ..Rates::default()
        };
        assert_eq!(parse_time("00:00:02:05", &r25), Some(2200));
        assert_eq!(parse_time("15000000t", &r25), Some(1500));
        // 23.976: 24 * 1000/1001; 24 frames = 1.001 s.
        let ntsc = Rates {
            frame_num: 24_000,
            frame_den: 1001,
            ..Rates::default()
        };
        assert_eq!(parse_time("24f", &ntsc), Some(1001));
        for bad in [
            "",
            "1.5",
            "1.s",
            "00:01.500",
            "0:00:01.000",
            "1x",
            "00:00:1.0",
        ] {
            assert_eq!(parse_time(bad, &r), None, "{bad}");
        }
    }

    /// Times and rates too large for the arithmetic are refused, never wrapped (a release
    /// build) or a panic (a build with overflow checks: the `ttml` fuzz target's smoke found
    /// `end="888...880:00:01.500"`).
    #[test]
    fn overflowing_times_and_rates_are_refused() {
        let r = Rates::default();
        let hours = "8".repeat(36);
        for bad in [
            format!("{hours}0:00:01.500"),
            format!("{hours}0:00:01:15"),
            format!("{}.5s", "9".repeat(29)),
            format!("{}f", "9".repeat(30)),
        ] {
            assert_eq!(parse_time(&bad, &r), None, "{bad}");
        }
        let huge = Rates {
            frame_num: u128::from(u32::MAX) * u128::from(u32::MAX),
            frame_den: u128::from(u32::MAX),
            sub_frame_rate: u128::from(u32::MAX),
            tick_rate: u128::from(u32::MAX),
        };
        assert_eq!(parse_time(&format!("{hours}:00:01:15.7"), &huge), None);
        let doc = format!(
            r#"<tt xmlns="http://www.w3.org/ns/ttml"><body><div><p begin="0s" end="{hours}0:00:01.500">x</p></div></body></tt>"#
        );
        let e = parse(Path::new("a.ttml"), &doc, 10_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.ttml") && e.contains("end"), "{e}");
        for (attr, value) in [
            ("tickRate", "4294967296"),
            ("frameRate", "340282366920938463463374607431768211455"),
            ("subFrameRate", "0"),
        ] {
            let doc = format!(
                r#"<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter" ttp:{attr}="{value}"><body/></tt>"#
            );
            let e = parse(Path::new("a.ttml"), &doc, 10_000)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("ttp:{attr}=\"{value}\"")), "{e}");
        }
    }

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter"
    xmlns:tts="http://www.w3.org/ns/ttml#styling" ttp:tickRate="10000000" xml:lang="de">
  <head><styling><style xml:id="s1" tts:color="yellow"/></styling></head>
  <body begin="1s"><div>
    <p xml:id="a" begin="0.5s" end="10000000t" style="s1">Hallo &amp; <span tts:fontStyle="italic">Welt</span><br/>  zwei
       drei </p>
    <p begin="00:00:03.000" dur="500ms">Tsch&#xFC;ss</p>
  </div></body>
</tt>
"#;

    #[test]
    fn parses_cues_and_writes_documents() {
        let t = parse(Path::new("a.ttml"), DOC, 10_000).unwrap();
        assert_eq!(t.language.as_deref(), Some("de"));
        assert_eq!(t.cues.len(), 2);
        assert_eq!((t.cues[0].start_ms, t.cues[0].end_ms), (1500, 2000));
        assert_eq!(t.cues[0].text, "Hallo &amp; Welt\nzwei drei");
        assert_eq!((t.cues[1].start_ms, t.cues[1].end_ms), (4000, 4500));
        assert_eq!(t.cues[1].text, "Tschüss");
        let doc = t.document(&t.cues[..1]);
        assert!(doc.contains(r#"<p xml:id="a" style="s1" begin="00:00:01.500" end="00:00:02.000">Hallo &amp; <span"#), "{doc}");
        assert!(doc.contains("<styling>"));
        let back = parse(Path::new("b.ttml"), &doc, 10_000).unwrap();
        assert_eq!(back.cues.len(), 1);
        assert_eq!(back.cues[0].text, t.cues[0].text);
        assert_eq!(back.cues[0].start_ms, 1500);
    }

    /// An xml:id becomes the WebVTT cue identifier only when WebVTT reads it back as one: "NOTE
    /// g" (found by the `ttml` fuzz target) would turn the cue into a comment, "STYLE" into a
    /// style block, "a-->b" into a timing line; those cues keep their times with no identifier.
    #[test]
    fn ids_webvtt_would_misread_are_left_out_of_the_conversion() {
        for (id, kept) in [
            ("NOTE g", false),
            ("NOTE", false),
            ("NOTE\tx", false),
            ("STYLE", false),
            ("REGION", false),
            ("a--&gt;b", false),
            ("NOTEBOOK", true),
            ("STYLES", true),
            ("c1", true),
        ] {
            let doc = format!(
                r#"<tt xmlns="http://www.w3.org/ns/ttml"><body><div><p xml:id="{id}" begin="0.5s" end="2s">Bon</p></div></body></tt>"#
            );
            let t = parse(Path::new("a.ttml"), &doc, 10_000).unwrap();
            let vtt = super::super::whole_file(&t.to_webvtt());
            let v = super::super::parse_webvtt(Path::new("a.vtt"), &vtt, 10_000).unwrap();
            assert_eq!(v.cues.len(), 1, "{id}: {vtt}");
            assert_eq!((v.cues[0].start_ms, v.cues[0].end_ms), (500, 2000), "{id}");
            assert_eq!(v.cues[0].id.is_some(), kept, "{id}: {vtt}");
        }
    }

    #[test]
    fn refusals_name_line_and_cue() {
        let e = |doc: &str| {
            parse(Path::new("x.ttml"), doc, 4000)
                .unwrap_err()
                .to_string()
        };
        let m = e(&DOC.replace("dur=\"500ms\"", "dur=\"500xs\""));
        assert!(
            m.contains("x.ttml") && m.contains("line 8") && m.contains("cue 2"),
            "{m}"
        );
        let m = e(&DOC.replace("</p>\n    <p", "</q>\n    <p"));
        assert!(
            m.contains("not well-formed XML") && m.contains("line 7"),
            "{m}"
        );
        let m = e(DOC);
        assert!(
            m.contains("past the end of the title") && m.contains("cue 2"),
            "{m}"
        );
        let m = e(&DOC.replace("begin=\"00:00:03.000\"", "begin=\"00:00:00.700\""));
        assert!(
            m.contains("overlapping") && m.contains("cue 1 (\"a\")"),
            "{m}"
        );
        let m = e(&DOC.replace("end=\"10000000t\"", "end=\"5000000t\""));
        assert!(
            m.contains("the end must be after the begin") && m.contains("line 6"),
            "{m}"
        );
    }
}
