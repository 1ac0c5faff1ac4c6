//! The CSV manifest parser (`path,label` rows with a header): any bytes as a manifest file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, data).unwrap();
    if let Ok(images) = cbr::dataset::from_csv(&manifest) {
        assert!(!images.is_empty());
        assert!(images.iter().all(|i| cbr::dataset::check_label(&i.label).is_ok()));
    }
});
