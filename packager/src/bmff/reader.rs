//! A bounded cursor over the bytes of one box. Every read is checked against the box's end, every
//! child box is bounded by its parent, and every error carries the input file, the box path
//! (`moov/trak[1]/mdia/minf/stbl/stsz`) and the absolute byte offset.

use std::path::Path;

use crate::error::Error;
use crate::limits;

/// A four-character code.
pub type FourCc = [u8; 4];

/// Renders a four-character code for paths and messages (non-printable bytes as `?`).
pub fn fourcc_str(f: &FourCc) -> String {
    f.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// A cursor over one box body (or any byte range) of an input.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    file: &'a Path,
    data: &'a [u8],
    pos: usize,
    /// Absolute file offset of `data[0]`.
    base: u64,
    path: String,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A cursor over `data`, which starts at absolute offset `base` of `file`, at box path `path`.
    pub fn new(file: &'a Path, data: &'a [u8], base: u64, path: impl Into<String>) -> Self {
        Reader {
            file,
            data,
            pos: 0,
            base,
            path: path.into(),
            depth: 0,
        }
    }

    /// The box path of this cursor.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The input file.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// Absolute file offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// An [`Error::Invalid`] at the current position.
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.to_path_buf(),
            box_path: self.path.clone(),
            offset: self.offset(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`] for this box.
    pub fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            file: self.file.to_path_buf(),
            box_path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// An [`Error::OverLimit`] at the current position.
    pub fn over_limit(&self, what: &'static str, value: u64, limit: u64) -> Error {
        Error::OverLimit {
            file: self.file.to_path_buf(),
            box_path: self.path.clone(),
            offset: self.offset(),
            what,
            value,
            limit,
        }
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(self.invalid(format!(
                "needs {n} more bytes but the box has {} left",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), Error> {
        self.bytes(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian 24-bit unsigned integer.
    pub fn u24(&mut self) -> Result<u32, Error> {
        let b = self.array::<3>()?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// Reads a four-character code.
    pub fn fourcc(&mut self) -> Result<FourCc, Error> {
        self.array()
    }

    /// Reads a full-box header: (version, flags).
    pub fn full_header(&mut self) -> Result<(u8, u32), Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// Reads an entry count and checks that `count * entry_size` bytes remain and that the count
    /// is within [`limits::MAX_TABLE_ENTRIES`], so a forged count never drives an allocation.
    pub fn count(&mut self, entry_size: usize) -> Result<usize, Error> {
        let n = self.u32()? as u64;
        self.check_count(n, entry_size)
    }

    /// Checks a count read elsewhere, like [`Reader::count`].
    pub fn check_count(&self, n: u64, entry_size: usize) -> Result<usize, Error> {
        if n > limits::MAX_TABLE_ENTRIES {
            return Err(self.over_limit("entry count", n, limits::MAX_TABLE_ENTRIES));
        }
        let need = n.saturating_mul(entry_size as u64);
        if need > self.remaining() as u64 {
            return Err(self.invalid(format!(
                "entry count {n} needs {need} bytes but the box has {} left",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub fn expect_end(&self) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(self.invalid(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }

    /// Iterates over the child boxes in the rest of this cursor.
    pub fn children(&mut self) -> Children<'a> {
        let start = self.pos;
        self.pos = self.data.len();
        Children {
            parent: Reader {
                file: self.file,
                data: &self.data[start..],
                pos: 0,
                base: self.base + start as u64,
                path: self.path.clone(),
                depth: self.depth,
            },
            seen: Vec::new(),
        }
    }
}

/// Iterator over child boxes; yields `(type, cursor over the body)`.
pub struct Children<'a> {
    parent: Reader<'a>,
    seen: Vec<(FourCc, usize)>,
}

/// Box types that are numbered in paths because they repeat (`trak[1]`).
const NUMBERED: [&FourCc; 5] = [b"trak", b"traf", b"trun", b"moof", b"mdat"];

impl<'a> Iterator for Children<'a> {
    type Item = Result<(FourCc, Reader<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let p = &mut self.parent;
        if p.remaining() == 0 {
            return None;
        }
        Some(self.next_box())
    }
}

impl<'a> Children<'a> {
    fn next_box(&mut self) -> Result<(FourCc, Reader<'a>), Error> {
        let p = &mut self.parent;
        if p.depth >= limits::MAX_DEPTH {
            return Err(p.over_limit(
                "box nesting depth",
                p.depth as u64,
                limits::MAX_DEPTH as u64,
            ));
        }
        let start = p.pos;
        let start_off = p.offset();
        if p.remaining() < 8 {
            let e = p.invalid(format!(
                "{} trailing bytes are too few for a box header",
                p.remaining()
            ));
            p.pos = p.data.len();
            return Err(e);
        }
        let size32 = p.u32()?;
        let kind = p.fourcc()?;
        let size = match size32 {
            0 => (p.data.len() - start) as u64,
            1 => p.u64()?,
            n => n as u64,
        };
        let header = (p.pos - start) as u64;
        let child_path = self.child_path(&kind);
        let p = &mut self.parent;
        if size < header || size > (p.data.len() - start) as u64 {
            let e = Error::Invalid {
                file: p.file.to_path_buf(),
                box_path: child_path,
                offset: start_off,
                reason: format!(
                    "box size {size} does not fit its parent ({} bytes left)",
                    p.data.len() - start
                ),
            };
            p.pos = p.data.len();
            return Err(e);
        }
        let body_start = p.pos;
        let end = start + size as usize;
        p.pos = end;
        Ok((
            kind,
            Reader {
                file: p.file,
                data: &p.data[body_start..end],
                pos: 0,
                base: p.base + body_start as u64,
                path: child_path,
                depth: p.depth + 1,
            },
        ))
    }

    fn child_path(&mut self, kind: &FourCc) -> String {
        let name = fourcc_str(kind);
        let numbered = NUMBERED.contains(&kind);
        let n = match self.seen.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.seen.push((*kind, 1));
                1
            }
        };
        let leaf = if numbered {
            format!("{name}[{n}]")
        } else {
            name
        };
        if self.parent.path.is_empty() || self.parent.path == "/" {
            leaf
        } else {
            format!("{}/{leaf}", self.parent.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn children_carry_paths_and_offsets() {
        let mut trak2 = boxed(b"tkhd", &[0; 4]);
        trak2 = boxed(b"trak", &trak2);
        let mut moov = boxed(b"trak", &boxed(b"tkhd", &[1; 4]));
        moov.extend_from_slice(&trak2);
        let moov = boxed(b"moov", &moov);
        let file = Path::new("x.mp4");
        let mut top = Reader::new(file, &moov, 100, "");
        let (k, mut m) = top.children().next().unwrap().unwrap();
        assert_eq!(&k, b"moov");
        assert_eq!(m.path(), "moov");
        let kids: Vec<_> = m.children().map(|c| c.unwrap()).collect();
        assert_eq!(kids[1].1.path(), "moov/trak[2]");
        let mut t2 = kids[1].1.clone();
        let (_, mut tkhd) = t2.children().next().unwrap().unwrap();
        assert_eq!(tkhd.path(), "moov/trak[2]/tkhd");
        assert_eq!(tkhd.offset(), 100 + 8 + 20 + 8 + 8);
        tkhd.u32().unwrap();
        let err = tkhd.u8().unwrap_err().to_string();
        assert!(
            err.contains("x.mp4") && err.contains("moov/trak[2]/tkhd"),
            "{err}"
        );
    }

    #[test]
    fn oversized_child_is_an_error_naming_the_box() {
        let mut data = boxed(b"moov", &[]);
        data[3] = 200; // claims 200 bytes, has 8
        let mut top = Reader::new(Path::new("f.mp4"), &data, 0, "");
        let err = top.children().next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("moov") && err.contains("does not fit"),
            "{err}"
        );
    }

    #[test]
    fn forged_count_is_refused_before_allocating() {
        let data = 0xffff_ffffu32.to_be_bytes();
        let mut r = Reader::new(
            Path::new("f.mp4"),
            &data,
            0,
            "moov/trak[1]/mdia/minf/stbl/stsz",
        );
        let err = r.count(4).unwrap_err().to_string();
        assert!(err.contains("stsz") && err.contains("limit"), "{err}");
        let data = 10u32.to_be_bytes();
        let mut r = Reader::new(Path::new("f.mp4"), &data, 0, "stco");
        assert!(r
            .count(4)
            .unwrap_err()
            .to_string()
            .contains("needs 40 bytes"));
    }

    #[test]
    fn large_size_and_size_zero() {
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"free");
        data.extend_from_slice(&20u64.to_be_bytes());
        data.extend_from_slice(&[7; 4]);
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(b"mdat");
        data.extend_from_slice(&[9; 5]);
        let mut top = Reader::new(Path::new("f.mp4"), &data, 0, "");
        let kids: Vec<_> = top.children().map(|c| c.unwrap()).collect();
        assert_eq!(kids[0].1.remaining(), 4);
        assert_eq!(&kids[1].0, b"mdat");
        assert_eq!(kids[1].1.remaining(), 5);
    }
}
