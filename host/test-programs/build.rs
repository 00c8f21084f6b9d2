//! Builds the test guests (`guests/`) to wasm32-wasip2 components, as
//! edgerec-runtime's build script builds the first-party plugins, and copies
//! them into OUT_DIR for `lib.rs` to embed.
//!
//! The nested cargo uses its own target directory (`<target>/wasm-guests`):
//! sharing the outer build's directory would deadlock on its lock. It builds
//! in release (small, fast guests) from the workspace's Cargo.lock, so it
//! needs no network once the outer build has fetched.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, library file stem, name in OUT_DIR)
const GUESTS: [(&str, &str, &str); 1] = [("edgerec-hostile-plugin", "edgerec_hostile_plugin", "hostile")];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../..");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["sdk/src", "sdk/wit", "sdk/Cargo.toml", "host/test-programs/guests"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let target_dir = guest_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for (package, _, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // The outer build's flags are for the host target, not for wasm.
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_BUILD_RUSTFLAGS"]
    {
        cmd.env_remove(var);
    }
    // Small guests: no debug info in the shipped components. Fast guests:
    // whole-program optimisation (the SDK's and serde's code is inlined into
    // the plugin's; fewer instructions is less time and less fuel per call).
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = cmd.status().expect("could not run cargo to build the wasm test guests");
    assert!(
        status.success(),
        "building the test guests for wasm32-wasip2 failed (see above); if the target is missing, run \
         `rustup target add wasm32-wasip2`"
    );
    for (_, stem, name) in GUESTS {
        let built = target_dir.join("wasm32-wasip2/release").join(format!("{stem}.wasm"));
        std::fs::copy(&built, out_dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("missing {}: {e}", built.display()));
    }
}

/// `<target>/wasm-guests`, where `<target>` is the outer build's target
/// directory (the ancestor of OUT_DIR above `<profile>/build/`).
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    let build = out_dir.ancestors().find(|p| p.file_name().is_some_and(|n| n == "build"));
    match build.and_then(Path::parent).and_then(Path::parent) {
        Some(target) => target.join("wasm-guests"),
        None => out_dir.join("wasm-guests"),
    }
}
