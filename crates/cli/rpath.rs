// The build script of every package that builds the `onnx-diagnostic` binary (crates/cli, and
// dist/, which builds it from the crates as dependencies): where the binary finds libtorch at
// run time (Linux run path, searched by the dynamic loader after `LD_LIBRARY_PATH` and before
// the system directories):
// 1. `$ORIGIN` and `$ORIGIN/../lib`: next to the binary, and the layout `scripts/install PREFIX`
//    writes (`PREFIX/bin`, `PREFIX/lib`);
// 2. the libtorch it was built against (`LIBTORCH/lib`, the project's `.venv` as an absolute
//    path), so a binary copied elsewhere on the same machine, or put in `~/.cargo/bin` by
//    `cargo install --path crates/cli`, still runs while the checkout is there;
// 3. then the checkout-relative entries of `.cargo/config.toml` (`target/{debug,release}`).
//
// These are emitted here rather than in `.cargo/config.toml` so that a `RUSTFLAGS` set in the
// environment (which replaces the config's flags) does not drop them from the binary.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let mut entries = vec!["$ORIGIN".to_owned(), "$ORIGIN/../lib".to_owned()];
    if let Some(lib) = std::env::var_os("LIBTORCH")
        .map(|d| std::path::PathBuf::from(d).join("lib"))
        .and_then(|d| d.canonicalize().ok())
    {
        entries.push(lib.display().to_string());
    }
    for entry in entries {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{entry}");
    }
}
