//! The MP4 parser's rejections, one malformed shape per test, on in-memory bytes: each starts
//! from a small valid audio MP4 (checked to parse in `the_base_file_parses`), breaks one thing,
//! and asserts the error kind, the box path and the absolute byte offset it names.

use std::path::Path;

use packager::bmff::{parse_source, Source, Track};
use packager::{limits, Error};

const NAME: &str = "mem.mp4";

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

/// A full box body: version, flags, then `rest`.
fn full(version: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![version, 0, 0, 0];
    v.extend_from_slice(rest);
    v
}

fn be32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Sample sizes of the base file's one audio track (one chunk).
const SIZES: [u32; 3] = [10, 20, 30];

/// The pieces of a small valid MP4 (`ftyp`, `moov` with one AAC track, `mdat`), each editable
/// before [`Mp4::build`].
struct Mp4 {
    /// Box bodies of `moov` children before the `trak` (`mvhd`).
    mvhd: Option<Vec<u8>>,
    tkhd: Vec<u8>,
    mdhd: Option<Vec<u8>>,
    hdlr: Vec<u8>,
    /// The `stbl` children in order (type, body).
    stbl: Vec<([u8; 4], Vec<u8>)>,
    /// Set the `stco` offset to the `mdat` body at build time.
    auto_stco: bool,
    mdat: Vec<u8>,
}

fn esds() -> Vec<u8> {
    // ES_Descriptor { ES_ID, flags, DecoderConfigDescriptor { 0x40 (MPEG-4 audio), stream
    // type, buffer size, max and average bit rate, DecoderSpecificInfo { AAC-LC } } }.
    let dsi = [0x05, 2, 0x11, 0x90];
    let mut dcd = vec![0x04, 13 + dsi.len() as u8, 0x40, 0x15, 0, 0, 0];
    dcd.extend(be32(&[128_000, 128_000]));
    dcd.extend_from_slice(&dsi);
    let mut es = vec![0x03, 3 + dcd.len() as u8, 0, 1, 0];
    es.extend(dcd);
    full(0, &es)
}

fn mp4a(sample_rate: u32) -> Vec<u8> {
    let mut e = vec![0; 6];
    e.extend_from_slice(&[0, 1]); // data_reference_index
    e.extend_from_slice(&[0; 8]); // version 0, reserved
    e.extend_from_slice(&[0, 2, 0, 16, 0, 0, 0, 0]); // channels, sample size
    e.extend(be32(&[sample_rate << 16]));
    e.extend(bx(b"esds", &esds()));
    bx(b"mp4a", &e)
}

impl Mp4 {
    fn new() -> Mp4 {
        let n = SIZES.len() as u32;
        let mut stsz = be32(&[0, n]);
        stsz.extend(be32(&SIZES));
        Mp4 {
            mvhd: Some(full(0, &be32(&[0, 0, 1000, 0]))),
            tkhd: full(0, &be32(&[0, 0, 1, 0, 0])),
            mdhd: Some(full(
                0,
                &[be32(&[0, 0, 48_000, 3072]), vec![0x55, 0xc4, 0, 0]].concat(),
            )),
            hdlr: full(0, &[be32(&[0]), b"soun".to_vec(), vec![0; 13]].concat()),
            stbl: vec![
                (*b"stsd", full(0, &[be32(&[1]), mp4a(48_000)].concat())),
                (*b"stts", full(0, &be32(&[1, n, 1024]))),
                (*b"stsc", full(0, &be32(&[1, 1, n, 1]))),
                (*b"stsz", full(0, &stsz)),
                (*b"stco", full(0, &be32(&[1, 0]))),
            ],
            auto_stco: true,
            mdat: vec![0x5a; SIZES.iter().sum::<u32>() as usize],
        }
    }

    /// The body of `stbl` child `kind`.
    fn stbl(&mut self, kind: &[u8; 4]) -> &mut Vec<u8> {
        &mut self.stbl.iter_mut().find(|(k, _)| k == kind).unwrap().1
    }

    fn trak(&self) -> Vec<u8> {
        let stbl: Vec<u8> = self.stbl.iter().flat_map(|(k, b)| bx(k, b)).collect();
        let mut mdia = self.mdhd.as_ref().map_or(Vec::new(), |b| bx(b"mdhd", b));
        mdia.extend(bx(b"hdlr", &self.hdlr));
        mdia.extend(bx(b"minf", &bx(b"stbl", &stbl)));
        let mut trak = bx(b"tkhd", &self.tkhd);
        trak.extend(bx(b"mdia", &mdia));
        bx(b"trak", &trak)
    }

    fn moov_with(&self, traks: usize) -> Vec<u8> {
        let mut moov = self.mvhd.as_ref().map_or(Vec::new(), |b| bx(b"mvhd", b));
        for _ in 0..traks {
            moov.extend(self.trak());
        }
        bx(b"moov", &moov)
    }

    fn ftyp() -> Vec<u8> {
        bx(b"ftyp", b"isom\0\0\x02\0isomiso6mp41")
    }

    fn build(mut self) -> Vec<u8> {
        let mdat_body = Mp4::ftyp().len() + self.moov_with(1).len() + 8;
        if let Some((_, stco)) = self.stbl.iter_mut().find(|(k, _)| k == b"stco") {
            if self.auto_stco {
                *stco = full(0, &be32(&[1, mdat_body as u32]));
            }
        }
        [Mp4::ftyp(), self.moov_with(1), bx(b"mdat", &self.mdat)].concat()
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<Track>, Error> {
    parse_source(Path::new(NAME), bytes)
}

/// Offset of the first box of type `kind` in `bytes` (its size field).
fn start(bytes: &[u8], kind: &[u8; 4]) -> u64 {
    bytes.windows(4).position(|w| w == kind).unwrap() as u64 - 4
}

/// Offset of the body of the first box of type `kind` (after an 8-byte header).
fn body(bytes: &[u8], kind: &[u8; 4]) -> u64 {
    start(bytes, kind) + 8
}

const STBL: &str = "moov/trak[1]/mdia/minf/stbl";

/// Asserts an [`Error::Invalid`] at `path` and `offset` whose reason contains `reason`.
#[track_caller]
fn invalid(r: Result<Vec<Track>, Error>, path: &str, offset: u64, reason: &str) {
    match r {
        Err(Error::Invalid {
            file,
            box_path,
            offset: o,
            reason: why,
        }) => {
            assert_eq!(file, Path::new(NAME));
            assert_eq!((box_path.as_str(), o), (path, offset), "{why}");
            assert!(why.contains(reason), "{why:?} lacks {reason:?}");
        }
        other => panic!("want Invalid at {path} byte {offset} ({reason}), got {other:?}"),
    }
}

/// Asserts an [`Error::OverLimit`] of `what` at `path` and `offset`.
#[track_caller]
fn over_limit(r: Result<Vec<Track>, Error>, path: &str, offset: u64, what: &str, value: u64) {
    match r {
        Err(Error::OverLimit {
            file,
            box_path,
            offset: o,
            what: w,
            value: v,
            ..
        }) => {
            assert_eq!(file, Path::new(NAME));
            assert_eq!((box_path.as_str(), o, w, v), (path, offset, what, value));
        }
        other => panic!("want OverLimit {what} at {path} byte {offset}, got {other:?}"),
    }
}

/// Asserts an [`Error::Unsupported`] at `path` whose reason contains `reason`.
#[track_caller]
fn unsupported(r: Result<Vec<Track>, Error>, path: &str, reason: &str) {
    match r {
        Err(Error::Unsupported {
            file,
            box_path,
            reason: why,
        }) => {
            assert_eq!(file, Path::new(NAME));
            assert_eq!(box_path, path, "{why}");
            assert!(why.contains(reason), "{why:?} lacks {reason:?}");
        }
        other => panic!("want Unsupported at {path} ({reason}), got {other:?}"),
    }
}

#[test]
fn the_base_file_parses() {
    let f = Mp4::new().build();
    let t = parse(&f).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].entry.codec, "mp4a.40.2");
    let mdat = body(&f, b"mdat");
    let got: Vec<(u64, u32, u64)> = t[0]
        .samples
        .iter()
        .map(|s| (s.offset, s.size, s.dts))
        .collect();
    assert_eq!(
        got,
        [(mdat, 10, 0), (mdat + 10, 20, 1024), (mdat + 30, 30, 2048)]
    );
}

// Top-level box headers.

#[test]
fn empty_file() {
    invalid(parse(&[]), "/", 0, "empty");
}

#[test]
fn first_box_is_not_a_top_level_box() {
    let mut f = Mp4::new().build();
    f[4..8].copy_from_slice(b"abcd");
    invalid(parse(&f), "/", 0, "not an MP4");
}

/// A header of box `kind` with a 32-bit `size` and, when `size` is 1, a 64-bit `large`.
fn header(size: u32, kind: &[u8; 4], large: &[u8]) -> Vec<u8> {
    [be32(&[size]), kind.to_vec(), large.to_vec()].concat()
}

#[test]
fn malformed_top_level_boxes_after_a_valid_file() {
    let max = u64::MAX;
    // (what follows the valid file, the path named, the reason); the offset is where it starts.
    for (tail, path, reason) in [
        (
            vec![0, 0, 0, 9, b'f'],
            "/",
            "5 trailing bytes are too few for a box header".into(),
        ),
        (
            header(4, b"free", &[]),
            "free",
            "box size 4 is smaller than its header".into(),
        ),
        (
            header(1, b"free", &[0; 4]),
            "free",
            "truncated 64-bit box size".into(),
        ),
        (
            header(1, b"free", &max.to_be_bytes()),
            "free",
            format!("box declares {max} bytes"),
        ),
        (
            header(1, b"skip", &12u64.to_be_bytes()),
            "skip",
            "box size 12 is smaller than its header".to_string(),
        ),
        (Mp4::new().moov_with(1), "moov", "a second moov box".into()),
    ] {
        let mut f = Mp4::new().build();
        let at = f.len() as u64;
        f.extend(tail);
        invalid(parse(&f), path, at, &reason);
    }
}

#[test]
fn box_size_past_the_end_of_the_file() {
    let mut f = Mp4::new().build();
    let moov = start(&f, b"moov");
    let mdat = start(&f, b"mdat") as usize;
    f.truncate(mdat);
    f[moov as usize..moov as usize + 4].copy_from_slice(&(1u32 << 20).to_be_bytes());
    invalid(parse(&f), "moov", moov, "box declares 1048576 bytes");
}

#[test]
fn missing_moov() {
    let f = [Mp4::ftyp(), bx(b"mdat", &[0; 60])].concat();
    invalid(parse(&f), "moov", f.len() as u64, "no moov box");
}

#[test]
fn moof_before_moov() {
    let f = [
        Mp4::ftyp(),
        bx(b"moof", &bx(b"mfhd", &full(0, &be32(&[1])))),
    ]
    .concat();
    invalid(
        parse(&f),
        "moof[1]",
        Mp4::ftyp().len() as u64,
        "moof before moov",
    );
}

/// A source of `len` bytes of which only `head` is stored (the rest reads as zeros).
struct Sparse {
    head: Vec<u8>,
    len: u64,
}

impl Source for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *self.head.get(offset as usize + i).unwrap_or(&0);
        }
        Ok(())
    }
}

#[test]
fn moov_over_the_header_box_limit_is_refused_before_reading_it() {
    let size = limits::MAX_HEADER_BOX + 9;
    let mut head = Mp4::ftyp();
    head.extend(be32(&[size as u32]));
    head.extend_from_slice(b"moov");
    let src = Sparse {
        len: head.len() as u64 - 8 + size,
        head,
    };
    over_limit(
        parse_source(Path::new(NAME), &src),
        "moov",
        Mp4::ftyp().len() as u64,
        "box size",
        limits::MAX_HEADER_BOX + 1,
    );
}

// Child boxes inside moov.

#[test]
fn malformed_child_boxes_in_moov() {
    let m = Mp4::new();
    let mut long = m.trak();
    let mut short = m.trak();
    let n = long.len() as u32 + 1;
    long[0..4].copy_from_slice(&n.to_be_bytes());
    short[0..4].copy_from_slice(&7u32.to_be_bytes());
    let huge = [
        be32(&[1]),
        b"trak".to_vec(),
        u64::MAX.to_be_bytes().to_vec(),
    ]
    .concat();
    let max = u64::MAX;
    // (what follows mvhd in moov, the path named, the reason); the offset is where it starts.
    for (tail, path, reason) in [
        (
            long,
            "moov/trak[1]",
            format!(
                "box size {n} does not fit its parent ({} bytes left)",
                n - 1
            ),
        ),
        (
            short,
            "moov/trak[1]",
            "box size 7 does not fit its parent".to_string(),
        ),
        (
            huge,
            "moov/trak[1]",
            format!("box size {max} does not fit its parent"),
        ),
        (
            vec![0, 0, 1],
            "moov",
            "3 trailing bytes are too few for a box header".into(),
        ),
    ] {
        let mvhd = bx(b"mvhd", m.mvhd.as_ref().unwrap());
        let f = [Mp4::ftyp(), bx(b"moov", &[mvhd.clone(), tail].concat())].concat();
        let at = body(&f, b"moov") + mvhd.len() as u64;
        invalid(parse(&f), path, at, &reason);
    }
}

// Required boxes.

/// Drops the sample-table box `kind`.
fn remove(m: &mut Mp4, kind: &[u8; 4]) {
    m.stbl.retain(|(k, _)| k != kind);
}

#[test]
fn missing_required_boxes() {
    // (box removed, its parent's path and type: the error's offset is the parent's body)
    for (kind, path, parent, what) in [
        (b"mvhd", "moov", b"moov", "mvhd"),
        (b"mdhd", "moov/trak[1]/mdia", b"mdia", "mdhd"),
        (b"stsd", STBL, b"stbl", "stsd"),
        (b"stsz", STBL, b"stbl", "stsz (or stz2)"),
        (b"stts", STBL, b"stbl", "stts"),
        (b"stsc", STBL, b"stbl", "stsc"),
        (b"stco", STBL, b"stbl", "stco (or co64)"),
    ] {
        let mut m = Mp4::new();
        match kind {
            b"mvhd" => m.mvhd = None,
            b"mdhd" => m.mdhd = None,
            _ => remove(&mut m, kind),
        }
        let f = m.build();
        let reason = format!("missing required {what} box");
        invalid(parse(&f), path, body(&f, parent), &reason);
    }
}

#[test]
fn sample_entry_without_sample_rate() {
    let mut m = Mp4::new();
    *m.stbl(b"stsd") = full(0, &[be32(&[1]), mp4a(0)].concat());
    let f = m.build();
    // Checked after the entry's children were read: the offset is the end of the entry.
    let end = start(&f, b"mp4a") + mp4a(0).len() as u64;
    invalid(
        parse(&f),
        &format!("{STBL}/stsd/mp4a"),
        end,
        "sample rate of 0",
    );
}

#[test]
fn esds_with_a_wrong_descriptor_tag() {
    let mut m = Mp4::new();
    let mut entry = mp4a(48_000);
    let tag = entry.windows(4).position(|w| w == b"esds").unwrap() + 8;
    entry[tag] = 0x07;
    *m.stbl(b"stsd") = full(0, &[be32(&[1]), entry].concat());
    let f = m.build();
    invalid(
        parse(&f),
        &format!("{STBL}/stsd/mp4a/esds"),
        body(&f, b"esds") + 5,
        "descriptor tag 0x7, expected 0x3",
    );
}

#[test]
fn zero_media_timescale() {
    let mut m = Mp4::new();
    m.mdhd = Some(full(
        0,
        &[be32(&[0, 0, 0, 3072]), vec![0x55, 0xc4, 0, 0]].concat(),
    ));
    let f = m.build();
    let path = "moov/trak[1]/mdia/mdhd";
    invalid(parse(&f), path, body(&f, b"mdhd") + 16, "timescale is 0");
}

// Sample tables inconsistent with each other, counts over limits or past their box: one row
// per shape, each an edit of the base file's sample table and the error expected in box `at`
// of the sample table, `plus` bytes into its body.

/// What a sample-table row expects.
enum Want {
    Invalid(&'static str),
    OverLimit(&'static str, u64),
}

struct Row {
    name: &'static str,
    edit: fn(&mut Mp4),
    at: &'static [u8; 4],
    plus: u64,
    want: Want,
}

const BIG_SAMPLE: u32 = limits::MAX_SAMPLE_SIZE as u32 + 1;
const MANY_SAMPLES: u32 = limits::MAX_SAMPLES as u32 + 1;

fn set(m: &mut Mp4, kind: &[u8; 4], values: &[u32]) {
    *m.stbl(kind) = full(0, &be32(values));
}

fn add(m: &mut Mp4, kind: &[u8; 4], values: &[u32]) {
    m.stbl.push((*kind, full(0, &be32(values))));
}

const TABLES: &[Row] = &[
    Row {
        name: "full box too short for its entry count",
        edit: |m| *m.stbl(b"stts") = full(0, &[0, 0]),
        at: b"stts",
        plus: 4,
        want: Want::Invalid("needs 4 more bytes but the box has 2 left"),
    },
    Row {
        name: "stts describes more samples than stsz",
        edit: |m| set(m, b"stts", &[1, 4, 1024]),
        at: b"stts",
        plus: 16,
        want: Want::Invalid("stts describes more samples than stsz's 3"),
    },
    Row {
        name: "stts describes fewer samples than stsz",
        edit: |m| set(m, b"stts", &[2, 1, 1024, 1, 1024]),
        at: b"stts",
        plus: 24,
        want: Want::Invalid("stts describes 2 samples, stsz 3"),
    },
    Row {
        name: "ctts describes more samples than stsz",
        edit: |m| add(m, b"ctts", &[1, 5, 0]),
        at: b"ctts",
        plus: 16,
        want: Want::Invalid("ctts describes more samples than stsz's 3"),
    },
    Row {
        name: "chunks hold more samples than stsz",
        edit: |m| set(m, b"stsc", &[1, 1, 4, 1]),
        at: b"stco",
        plus: 12,
        want: Want::Invalid("chunks hold more samples than stsz's 3"),
    },
    Row {
        name: "chunks hold fewer samples than stsz",
        edit: |m| set(m, b"stsc", &[1, 1, 2, 1]),
        at: b"stsc",
        plus: 20,
        want: Want::Invalid("chunks hold 2 samples, stsz 3"),
    },
    Row {
        name: "stsc first chunks not increasing",
        edit: |m| set(m, b"stsc", &[2, 1, 1, 1, 1, 2, 1]),
        at: b"stsc",
        plus: 32,
        want: Want::Invalid("first_chunk 1 is not increasing from 1"),
    },
    Row {
        name: "sync sample number past the sample count",
        edit: |m| add(m, b"stss", &[1, 4]),
        at: b"stss",
        plus: 12,
        want: Want::Invalid("sync sample number 4 out of 1..=3"),
    },
    Row {
        name: "sizes table shorter than its count",
        edit: |m| set(m, b"stsz", &[0, 3, 10]),
        at: b"stsz",
        plus: 12,
        want: Want::Invalid("sample count 3 needs 12 bytes of sizes, the box has 4"),
    },
    Row {
        name: "uniform sample sizes larger than the file",
        edit: |m| set(m, b"stsz", &[1 << 20, 3]),
        at: b"stsz",
        plus: 12,
        want: Want::Invalid("3 samples of 1048576 bytes cannot fit in the file"),
    },
    Row {
        name: "stz2 field size other than 4, 8 or 16",
        edit: |m| {
            remove(m, b"stsz");
            add(m, b"stz2", &[5, 3, 0, 0]);
        },
        at: b"stz2",
        plus: 8,
        want: Want::Invalid("field_size 5"),
    },
    Row {
        name: "chunk offset table count past the box",
        edit: |m| {
            m.auto_stco = false;
            set(m, b"stco", &[1000, 0]);
        },
        at: b"stco",
        plus: 8,
        want: Want::Invalid("entry count 1000 needs 4000 bytes but the box has 4 left"),
    },
    Row {
        name: "sample count over the limit",
        edit: |m| set(m, b"stsz", &[0, MANY_SAMPLES]),
        at: b"stsz",
        plus: 12,
        want: Want::OverLimit("sample count", MANY_SAMPLES as u64),
    },
    Row {
        name: "table entry count over the limit",
        edit: |m| set(m, b"stts", &[u32::MAX]),
        at: b"stts",
        plus: 8,
        want: Want::OverLimit("entry count", u32::MAX as u64),
    },
    Row {
        name: "sample size over the limit",
        edit: |m| set(m, b"stsz", &[0, 3, 10, BIG_SAMPLE, 30]),
        at: b"stsz",
        plus: 20,
        want: Want::OverLimit("sample size", BIG_SAMPLE as u64),
    },
];

#[test]
fn sample_table_rejections() {
    for row in TABLES {
        eprintln!("row: {}", row.name);
        let mut m = Mp4::new();
        (row.edit)(&mut m);
        let f = m.build();
        let path = format!("{STBL}/{}", String::from_utf8_lossy(row.at));
        let offset = body(&f, row.at) + row.plus;
        let r = parse(&f);
        match row.want {
            Want::Invalid(reason) => invalid(r, &path, offset, reason),
            Want::OverLimit(what, value) => over_limit(r, &path, offset, what, value),
        }
    }
}

#[test]
fn chunk_offset_outside_every_mdat() {
    let mut m = Mp4::new();
    m.auto_stco = false;
    *m.stbl(b"stco") = full(0, &be32(&[1, 3]));
    let f = m.build();
    invalid(
        parse(&f),
        STBL,
        3,
        "sample 1 of track 1 (10 bytes at offset 3) lies outside every mdat",
    );
}

#[test]
fn more_sample_descriptions_than_one() {
    let mut m = Mp4::new();
    *m.stbl(b"stsd") = full(0, &[be32(&[2]), mp4a(48_000), mp4a(48_000)].concat());
    let f = m.build();
    unsupported(parse(&f), &format!("{STBL}/stsd"), "2 sample descriptions");
}

#[test]
fn more_tracks_than_the_limit() {
    let m = Mp4::new();
    let f = [Mp4::ftyp(), m.moov_with(limits::MAX_TRACKS + 1)].concat();
    unsupported(
        parse(&f),
        "moov",
        &format!("more than {} tracks", limits::MAX_TRACKS),
    );
}
