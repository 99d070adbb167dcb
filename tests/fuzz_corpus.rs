//! CI's stand-in for `cargo fuzz` (which needs nightly): every file of
//! `fuzz/corpus/<target>/` goes through the same checks the fuzz targets run.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, check) in harness::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let replay = std::panic::catch_unwind(|| check(&data));
            assert!(replay.is_ok(), "{name}: {} panicked", file.display());
        }
    }
}
