//! cbr-core as a WebAssembly module, for browsers and Node: build a
//! classifier file from embeddings, edit one (add, remove, relabel), read what
//! a file says about itself, turn RGBA pixels into the embedder's input, and
//! turn scores into an answer. Every result is cbr-core's own, so a model
//! built here is byte for byte what `cbr build --embeddings` writes.
//!
//! The interface is a plain byte protocol, so the module needs no bindings
//! generator: the caller asks for an input buffer ([`cbr_input`]), writes a
//! request into it, calls [`cbr_call`] and reads the response from
//! [`cbr_output`] / [`cbr_output_len`]. A request and a response are framed
//! alike ([`frame`]): a JSON object, then binary blobs (model files, f32
//! arrays in little-endian). The request's `op` names the operation
//! ([`ops`]); a failed call answers `{"error", "kind"}` and status 1.
//! `web/pkg/cbr-core.mjs` is the JavaScript side.

pub mod frame;
pub mod ops;

use std::cell::RefCell;

thread_local! {
    // WebAssembly here is single-threaded: one request and one response at a time.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Makes the input buffer `len` bytes long and returns where it starts, for
/// the caller to write a request into (valid until the next call).
#[no_mangle]
pub extern "C" fn cbr_input(len: usize) -> *mut u8 {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.resize(len, 0);
        b.as_mut_ptr()
    })
}

/// Runs the request in the input buffer; 0 when it succeeded, 1 when the
/// response is an error.
#[no_mangle]
pub extern "C" fn cbr_call() -> u32 {
    let request = INPUT.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let (status, response) = match ops::call(&request) {
        Ok(response) => (0, response),
        Err(e) => (1, ops::error_response(&e)),
    };
    OUTPUT.with(|b| *b.borrow_mut() = response);
    status
}

/// Where the last response starts.
#[no_mangle]
pub extern "C" fn cbr_output() -> *const u8 {
    OUTPUT.with(|b| b.borrow().as_ptr())
}

/// The last response's length in bytes.
#[no_mangle]
pub extern "C" fn cbr_output_len() -> usize {
    OUTPUT.with(|b| b.borrow().len())
}
