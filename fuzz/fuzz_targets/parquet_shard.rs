//! The Parquet shard reader (`cbr build --embeddings`): any bytes as a shard file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("s.parquet");
    std::fs::write(&shard, data).unwrap();
    let _ = cbr::shard::read(&[shard]);
});
