//! Thumbnails: JPEG tile grids (`--thumbnails`), each image a `COLS`x`ROWS` grid of thumbnails
//! taken every `interval`. The packager copies the images unchanged; it checks that each is a
//! JPEG (SOI marker, a SOF frame header with the image size), that every image has the same
//! size, that the grid divides it, and that no image starts past the end of the title.
//! Manifests: a DASH image AdaptationSet (`thumbnail_tile` property) and an HLS image media
//! playlist (`EXT-X-IMAGES-ONLY`, `EXT-X-TILES`) named by `EXT-X-IMAGE-STREAM-INF`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Most images accepted in one `--thumbnails` input.
pub const MAX_IMAGES: usize = 100_000;
/// Largest accepted image file, bytes.
pub const MAX_IMAGE_BYTES: u64 = 16 << 20;

/// One `--thumbnails` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailInput {
    /// A directory (every `*.jpg`/`*.jpeg` in it, by name) or a pattern with `%d` or `%0Nd`
    /// (`tiles/%03d.jpg`: consecutive numbers from 0 or 1).
    pub source: PathBuf,
    /// Time between two thumbnails, milliseconds.
    pub interval_ms: u64,
    /// Columns of each grid.
    pub cols: u32,
    /// Rows of each grid.
    pub rows: u32,
}

impl ThumbnailInput {
    /// Time covered by one grid image, milliseconds.
    pub fn image_ms(&self) -> u64 {
        self.interval_ms * u64::from(self.cols) * u64::from(self.rows)
    }
}

/// Parses `COLSxROWS` (`5x5`), each 1-100.
pub fn parse_grid(s: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::Options(format!(
            "--thumbnail-grid {s:?}: expected COLSxROWS such as 5x5 (each 1-100)"
        ))
    };
    let (c, r) = s.split_once('x').ok_or_else(bad)?;
    let c: u32 = c.parse().map_err(|_| bad())?;
    let r: u32 = r.parse().map_err(|_| bad())?;
    if !(1..=100).contains(&c) || !(1..=100).contains(&r) {
        return Err(bad());
    }
    Ok((c, r))
}

fn image_error(file: &Path, reason: impl Into<String>) -> Error {
    Error::Options(format!(
        "--thumbnails {}: {}",
        file.display(),
        reason.into()
    ))
}

/// Width and height of a JPEG from its first SOF frame header, after checking the SOI marker.
pub fn jpeg_size(file: &Path, b: &[u8]) -> Result<(u32, u32)> {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err(image_error(
            file,
            "not a JPEG (no SOI marker FFD8 at byte 0)",
        ));
    }
    let mut i = 2usize;
    loop {
        // Fill bytes before a marker are allowed.
        while i < b.len() && b[i] == 0xFF && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 4 > b.len() {
            return Err(image_error(
                file,
                "not a JPEG: no SOF frame header before the end of the file",
            ));
        }
        if b[i] != 0xFF {
            return Err(image_error(
                file,
                format!(
                    "not a JPEG: expected a marker at byte {i}, found {:#04x}",
                    b[i]
                ),
            ));
        }
        let m = b[i + 1];
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if len < 2 {
            return Err(image_error(
                file,
                format!("JPEG segment {m:#04x} at byte {i} has length {len}"),
            ));
        }
        match m {
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if len < 8 || i + 2 + len > b.len() {
                    return Err(image_error(
                        file,
                        format!("JPEG SOF header at byte {i} is truncated"),
                    ));
                }
                let h = u32::from(u16::from_be_bytes([b[i + 5], b[i + 6]]));
                let w = u32::from(u16::from_be_bytes([b[i + 7], b[i + 8]]));
                if w == 0 || h == 0 {
                    return Err(image_error(
                        file,
                        format!("JPEG SOF header at byte {i} gives a {w}x{h} image"),
                    ));
                }
                return Ok((w, h));
            }
            0xDA | 0xD9 => {
                return Err(image_error(
                    file,
                    "not a JPEG: image data before any SOF frame header",
                ))
            }
            _ => i += 2 + len,
        }
    }
}

/// The thumbnail images ready to be copied, with what the manifests need.
#[derive(Debug, Clone)]
pub struct ImageView {
    /// Rendition id (`thumbnails`) and the directory of its files.
    pub id: String,
    /// Grid image width and height, pixels.
    pub width: u32,
    /// Grid image height.
    pub height: u32,
    /// Columns, rows.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
    /// Thumbnail interval, milliseconds.
    pub interval_ms: u64,
    /// Source files, in order.
    pub sources: Vec<PathBuf>,
    /// File sizes, bytes.
    pub sizes: Vec<u64>,
    /// Title duration, milliseconds.
    pub title_ms: u64,
}

impl ImageView {
    /// Time covered by one grid image, milliseconds.
    pub fn image_ms(&self) -> u64 {
        self.interval_ms * u64::from(self.cols) * u64::from(self.rows)
    }

    /// Output file name of image `k` (`00001.jpg`, numbers from 1).
    pub fn file(k: usize) -> String {
        format!("{:05}.jpg", k + 1)
    }

    /// Duration of image `k`, seconds (the last one ends with the title).
    pub fn duration(&self, k: usize) -> f64 {
        let start = k as u64 * self.image_ms();
        let end = (start + self.image_ms()).min(self.title_ms.max(start + 1));
        (end - start) as f64 / 1000.0
    }

    /// Peak bit rate: the largest image over the time it covers.
    pub fn bandwidth(&self) -> u64 {
        let max = self.sizes.iter().copied().max().unwrap_or(0);
        (max * 8 * 1000).div_ceil(self.image_ms().max(1)).max(1)
    }
}

/// The files of `source`: a directory's `*.jpg`/`*.jpeg` by name, or a `%d`/`%0Nd` pattern's
/// consecutive numbers from 0 or 1.
fn list(source: &Path) -> Result<Vec<PathBuf>> {
    if source.is_dir() {
        let mut v = Vec::new();
        for e in std::fs::read_dir(source).map_err(|e| Error::io(source, e))? {
            let p = e.map_err(|e| Error::io(source, e))?.path();
            let ext = p
                .extension()
                .and_then(|x| x.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("jpg" | "jpeg")) && p.is_file() {
                v.push(p);
            }
        }
        v.sort();
        if v.is_empty() {
            return Err(image_error(
                source,
                "the directory has no .jpg or .jpeg file",
            ));
        }
        return Ok(v);
    }
    let s = source.to_string_lossy();
    let Some(pos) = s.find('%') else {
        return Err(image_error(
            source,
            "neither a directory nor a pattern with %d (such as tiles/%03d.jpg)",
        ));
    };
    let rest = &s[pos + 1..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !rest[digits.len()..].starts_with('d') || rest[digits.len() + 1..].contains('%') {
        return Err(image_error(
            source,
            "the pattern must hold exactly one %d or %0Nd",
        ));
    }
    let width: usize = digits.trim_start_matches('0').parse().unwrap_or(0);
    let (head, tail) = (&s[..pos], &rest[digits.len() + 1..]);
    let name = |n: usize| PathBuf::from(format!("{head}{n:0width$}{tail}"));
    let first = if name(0).is_file() { 0 } else { 1 };
    let mut v = Vec::new();
    while name(first + v.len()).is_file() {
        if v.len() >= MAX_IMAGES {
            return Err(image_error(
                source,
                format!("more than {MAX_IMAGES} images"),
            ));
        }
        v.push(name(first + v.len()));
    }
    if v.is_empty() {
        return Err(image_error(
            source,
            format!(
                "no file matches the pattern ({} does not exist)",
                name(1).display()
            ),
        ));
    }
    Ok(v)
}

/// Reads and checks the images of `input` for a title lasting `title_ms`: each a JPEG of the
/// same size, the grid dividing it, none starting past the title's end. Returns the view and a
/// warning when the images end well before the title does.
pub fn plan(input: &ThumbnailInput, title_ms: u64) -> Result<(ImageView, Option<String>)> {
    if input.interval_ms == 0 {
        return Err(Error::Options(
            "--thumbnail-interval must be above 0".into(),
        ));
    }
    let sources = list(&input.source)?;
    if sources.len() > MAX_IMAGES {
        return Err(image_error(
            &input.source,
            format!("more than {MAX_IMAGES} images"),
        ));
    }
    let mut size: Option<(u32, u32, &Path)> = None;
    let mut sizes = Vec::with_capacity(sources.len());
    for f in &sources {
        let len = std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len();
        if len > MAX_IMAGE_BYTES {
            return Err(image_error(
                f,
                format!("{len} bytes, over the limit of {MAX_IMAGE_BYTES}"),
            ));
        }
        let b = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let (w, h) = jpeg_size(f, &b)?;
        match size {
            None => {
                if w % input.cols != 0 || h % input.rows != 0 {
                    return Err(image_error(
                        f,
                        format!(
                            "a {w}x{h} image cannot hold a {}x{} grid (--thumbnail-grid): the width must divide by the columns and the height by the rows",
                            input.cols, input.rows
                        ),
                    ));
                }
                size = Some((w, h, f));
            }
            Some((w0, h0, f0)) if (w0, h0) != (w, h) => {
                return Err(image_error(
                    f,
                    format!(
                        "{w}x{h}, but {} is {w0}x{h0}: every grid image must have the same size",
                        f0.display()
                    ),
                ));
            }
            Some(_) => {}
        }
        sizes.push(len);
    }
    let (width, height, _) = size.ok_or_else(|| image_error(&input.source, "no image"))?;
    let per = input.image_ms();
    let n = sources.len() as u64;
    if (n - 1) * per >= title_ms.max(1) {
        return Err(image_error(
            &sources[sources.len() - 1],
            format!(
                "image {n} would start at {:.3} s, past the end of the title ({:.3} s): check --thumbnail-interval and --thumbnail-grid",
                ((n - 1) * per) as f64 / 1000.0,
                title_ms as f64 / 1000.0
            ),
        ));
    }
    let warning = (n * per + per < title_ms).then(|| {
        format!(
            "--thumbnails {}: {n} images cover {:.3} s of a {:.3} s title",
            input.source.display(),
            (n * per) as f64 / 1000.0,
            title_ms as f64 / 1000.0
        )
    });
    Ok((
        ImageView {
            id: "thumbnails".into(),
            width,
            height,
            cols: input.cols,
            rows: input.rows,
            interval_ms: input.interval_ms,
            sources,
            sizes,
            title_ms,
        },
        warning,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8];
        b.extend(h.to_be_bytes());
        b.extend(w.to_be_bytes());
        b.extend([1, 1, 0x11, 0, 0xFF, 0xD9]);
        b
    }

    #[test]
    fn size_from_sof() {
        let p = Path::new("a.jpg");
        assert_eq!(jpeg_size(p, &jpeg(800, 450)).unwrap(), (800, 450));
        let e = jpeg_size(p, b"\x89PNG\r\n").unwrap_err().to_string();
        assert!(e.contains("a.jpg") && e.contains("SOI"), "{e}");
        let e = jpeg_size(p, &[0xFF, 0xD8, 0xFF, 0xDA, 0, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("before any SOF"), "{e}");
    }

    #[test]
    fn grid() {
        assert_eq!(parse_grid("5x4").unwrap(), (5, 4));
        for bad in ["5", "0x5", "5x", "x5", "5x101", "a x b"] {
            assert!(parse_grid(bad).is_err(), "{bad}");
        }
    }
}
