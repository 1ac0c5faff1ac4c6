//! An edit on a fuzzed model: open it for editing (the reader's checks, the stored index),
//! remove and rename classes, and write it again. Whatever opens must edit without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut m) = cbr_core::edit::EditableModel::from_bytes(data) else { return };
    let labels = m.labels();
    if let Some(first) = labels.first().cloned() {
        let mut renamed = cbr_core::edit::EditableModel::from_bytes(data).unwrap();
        let _ = renamed.relabel(&first, "renamed").and_then(|_| renamed.to_bytes());
        let _ = m.remove_labels(&[first]).and_then(|_| m.to_bytes());
    }
});
