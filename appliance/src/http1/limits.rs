//! Limits on untrusted request input, in one place. Every limit has a named error when exceeded.

/// Longest request head (request line + header fields + the blank line), bytes. Over it: 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields in one request. Over it: 431.
pub const MAX_HEADERS: usize = 64;

/// Longest request target, bytes. Over it: 414.
pub const MAX_TARGET_LEN: usize = 8192;

/// Most ranges honoured in one `Range` header; more and the header is ignored (200, whole body),
/// as nginx's `max_ranges` does.
pub const MAX_RANGES: usize = 16;

/// Longest `Range` header value considered, bytes; longer values are ignored.
pub const MAX_RANGE_HEADER_LEN: usize = 1024;

/// Most bytes buffered per connection from pipelined requests before reading pauses.
pub const MAX_BUFFERED_INPUT: usize = 64 * 1024;

/// Empty lines (CRLF) tolerated before a request line (RFC 9112 section 2.2).
pub const MAX_LEADING_EMPTY_LINES: usize = 4;
