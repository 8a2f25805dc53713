//! A small big-endian box builder: `open` pushes a box whose size is patched by `close`, so a
//! half-built box can never be emitted with a wrong size.

/// Builds nested boxes into one buffer.
#[derive(Debug, Default)]
pub struct BoxBuf {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxBuf {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Starts a box of type `kind`.
    pub fn open(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(kind);
    }
    /// Starts a full box.
    pub fn open_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.open(kind);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }
    /// Ends the innermost open box, writing its size.
    pub fn close(&mut self) {
        let start = self.open.pop().expect("close without open");
        let size = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    /// Appends a four-character code.
    pub fn fourcc(&mut self, f: &[u8; 4]) {
        self.bytes(f);
    }
    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    /// Appends an `i32`.
    pub fn i32(&mut self, v: i32) {
        self.bytes(&v.to_be_bytes());
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    /// Overwrites a `u32` at `at`.
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    /// The finished bytes; every box must be closed.
    pub fn finish(self) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed box");
        self.buf
    }
}
