//! Builds routefabric guest plugins for `wasm32-wasip2` from inside a build script, so that a plain
//! `cargo build` / `cargo test` / `cargo run` produces and embeds them with no extra step.
//!
//! The nested build runs the same cargo and rustc as the outer one, against the same workspace and
//! `Cargo.lock`, in its own target directory (`<target>/wasm-plugins`), so it neither waits on the
//! outer build's lock nor rebuilds when the outer profile changes. A rust-toolchain without the
//! `wasm32-wasip2` target gets it through `rustup target add`; where that is impossible the build
//! stops with the one command to run.
//!
//! Wasmtime does the same for its test programs (`crates/test-programs/artifacts/build.rs`).
#![deny(missing_docs)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every plugin is built for. Rust's `wasm32-wasip2` output is a component already.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (defined in the workspace `Cargo.toml`).
pub const PROFILE: &str = "plugin";

/// Build `packages` (workspace package names) for [`TARGET`] and copy each component to
/// `$OUT_DIR/<crate_name>.wasm` (dashes become underscores). Returns the copied paths in order.
///
/// Panics with a one-line explanation when the build cannot be done: a build script has no
/// better way to report.
pub fn build_plugins(packages: &[&str]) -> Vec<PathBuf> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let workspace = find_workspace_root(&manifest_dir);
    let out_dir = PathBuf::from(env_var("OUT_DIR"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
        .join("wasm-plugins");

    for dir in ["wit", "plugin-sdk", "host/core", "plugins", "tests/plugins"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        cmd.arg("-p").arg(package);
    }
    // The outer build's settings are for the host target and its tools; none of them applies to
    // the guest build (and clippy's wrapper would lint the guests for the wrong target).
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer_only = matches!(
            key,
            "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_RUSTFLAGS"
                | "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CLIPPY_ARGS"
                | "CARGO_PRIMARY_PACKAGE"
                | "TARGET"
                | "HOST"
                | "OUT_DIR"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
        ) || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("__CARGO");
        if outer_only {
            cmd.env_remove(key);
        }
    }

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("routefabric: could not run cargo to build the plugins: {e}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "routefabric: building the plugins {packages:?} for {TARGET} failed (cargo output above)"
        );
    }

    let built = target_dir.join(TARGET).join(PROFILE);
    packages
        .iter()
        .map(|package| {
            let file = format!("{}.wasm", package.replace('-', "_"));
            let from = built.join(&file);
            let to = out_dir.join(&file);
            std::fs::copy(&from, &to).unwrap_or_else(|e| {
                panic!(
                    "routefabric: plugin {package} was built but {} is missing: {e}",
                    from.display()
                )
            });
            to
        })
        .collect()
}

fn env_var(key: &str) -> String {
    env::var(key).unwrap_or_else(|_| {
        panic!("routefabric-wasm-build must run in a build script ({key} is not set)")
    })
}

fn find_workspace_root(start: &Path) -> PathBuf {
    let mut dir = Some(start);
    while let Some(d) = dir {
        let manifest = d.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|s| s.contains("[workspace]")) {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    panic!(
        "routefabric: no workspace Cargo.toml above {}",
        start.display()
    );
}

/// Make sure the active toolchain has the `wasm32-wasip2` standard library, adding it with rustup
/// when it is missing (these machines set `RUSTUP_AUTO_INSTALL=0`, so nothing adds it implicitly).
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(TARGET).join("lib").is_dir();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let added = rustup.output().is_ok_and(|o| o.status.success());
    if !added || !sysroot.as_deref().is_some_and(installed) {
        panic!(
            "routefabric builds its plugins for {TARGET}, which this toolchain lacks: run `rustup target add {TARGET}` and build again"
        );
    }
}
