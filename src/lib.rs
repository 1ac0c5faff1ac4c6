//! The `cbr` binary's library half: the HTTP server (`cbr serve`), kept as a library so the
//! integration tests can read its route table. The command line is `main.rs` + `cli/`.
// Every `unsafe` says why it is sound (checked by clippy in CI).
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod serve;
