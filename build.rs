//! One link flag for the release binary: no `.eh_frame_hdr` (43 KiB on aarch64).
//!
//! That table is how an unwinder finds a function's frame description, for a panic to
//! unwind or a backtrace to be printed. The release profile aborts on panic (Cargo.toml)
//! and is stripped, so a backtrace would name no function anyway; the panic's message is
//! still printed before the abort. Only release builds get it: tests unwind to report a
//! failed assertion, and without the table every panic there would abort.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(release && linux) {
        return;
    }
    // rust-lld (.cargo/config.toml) takes the linker's own flags; a C compiler driver
    // (the default cc, cross's gcc) passes them on with -Wl.
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let name = Path::new(&linker)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let flag = if name.contains("lld") {
        "--no-eh-frame-hdr"
    } else {
        "-Wl,--no-eh-frame-hdr"
    };
    println!("cargo:rustc-link-arg-bins={flag}");
}
