//! Metadata JSON validation: parse, validate every field and the fields against each other.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = cbr_core::meta::ClassifierInfo::from_json(text) {
            // What validates must also describe a consistent model.
            assert_eq!(info.labels.len(), info.images_per_label.len());
            let _ = info.validate_against(&Default::default());
        }
    }
});
