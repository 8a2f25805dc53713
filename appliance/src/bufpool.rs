//! Per-thread pools of the buffers a response is made of, so a cache hit allocates none once a
//! thread is warm: response-head byte buffers (taken by `http1::response::Head::new`) and chunk
//! lists (taken by `service::Service` for the whole-file and single-range answers), and the
//! strings a response keeps its resource path in for the access log and QoE. A
//! connection gives them back when its response is finished (`conn::Conn`). Each pool keeps at
//! most [`POOL_MAX`] entries; oversized buffers are not kept.

use std::cell::RefCell;

use crate::service::Chunk;

/// Most buffers of each kind one thread keeps.
pub const POOL_MAX: usize = 256;
/// Capacity a new head buffer starts with.
pub const HEAD_CAPACITY: usize = 512;
/// Head buffers that grew past this are dropped rather than kept.
const HEAD_KEEP_MAX: usize = 4096;
/// Chunk lists that grew past this (multipart answers) are dropped rather than kept.
const CHUNKS_KEEP_MAX: usize = 8;

thread_local! {
    static HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static CHUNKS: RefCell<Vec<Vec<Chunk>>> = const { RefCell::new(Vec::new()) };
    static PATHS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Capacity a new path string starts with.
pub const PATH_CAPACITY: usize = 256;
/// Path strings that grew past this are dropped rather than kept.
const PATH_KEEP_MAX: usize = 4096;

/// An empty string for a resource path (pooled, or new with [`PATH_CAPACITY`]).
pub fn path() -> String {
    PATHS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| String::with_capacity(PATH_CAPACITY))
}

/// Gives back a path string taken with [`path`].
pub fn give_path(mut s: String) {
    if (PATH_CAPACITY..=PATH_KEEP_MAX).contains(&s.capacity()) {
        s.clear();
        PATHS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(s);
            }
        });
    }
}

/// An empty head buffer (pooled, or new with [`HEAD_CAPACITY`]).
pub fn head() -> Vec<u8> {
    HEADS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(HEAD_CAPACITY))
}

/// An empty chunk list with room for at least two chunks.
pub fn chunks() -> Vec<Chunk> {
    CHUNKS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(2))
}

/// Gives back a finished response's chunk list and the in-memory buffers in it.
pub fn give(mut list: Vec<Chunk>) {
    for c in list.drain(..) {
        if let Chunk::Mem(mut b) = c {
            if (HEAD_CAPACITY..=HEAD_KEEP_MAX).contains(&b.capacity()) {
                b.clear();
                HEADS.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < POOL_MAX {
                        p.push(b);
                    }
                });
            }
        }
    }
    if (2..=CHUNKS_KEEP_MAX).contains(&list.capacity()) {
        CHUNKS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(list);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_reused() {
        let mut h = head();
        h.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let ptr = h.as_ptr();
        let mut c = chunks();
        c.push(Chunk::Mem(h));
        c.push(Chunk::File { offset: 0, len: 9 });
        give(c);
        let again = head();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same buffer");
        assert!(chunks().is_empty());
        // A huge head is not kept.
        let mut big = head();
        big.reserve(1 << 20);
        give(vec![Chunk::Mem(big), Chunk::File { offset: 0, len: 1 }]);
        assert!(head().capacity() <= HEAD_KEEP_MAX);
        let mut s = path();
        s.push_str("/t/seg.m4s");
        let ptr = s.as_ptr();
        give_path(s);
        let again = path();
        assert!(again.is_empty() && again.as_ptr() == ptr, "the same string");
    }
}
