//! Placeholder: this crate is built by its own issue.
#![deny(unsafe_code)]
