//! What the handshake refuses, each with a typed error naming the file, and the host keeps
//! working after: a file that is not a library, a library that is not a plugin, a plugin of
//! another ABI version, one built with another onnx-diagnostic-core. One test in its own
//! binary: it sets the environment variable that picks what plugins/mismatch declares.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use onnx_diagnostic_core::state::{CORE_VERSION, PLUGIN_ABI_VERSION};
use onnx_diagnostic_plugins::{PluginError, load, loaded};

fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

#[allow(unsafe_code)]
fn declare(what: &str) {
    // SAFETY: the only test of this binary: no other thread reads the environment.
    unsafe { std::env::set_var("ONNX_DIAGNOSTIC_MISMATCH", what) };
}

#[test]
fn the_handshake_refuses_what_is_not_a_plugin_of_this_build() {
    // Not a library.
    let text = std::env::temp_dir().join(format!("od-not-a-library-{}.so", std::process::id()));
    std::fs::write(&text, "not a library").unwrap();
    let e = load(&text).unwrap_err();
    assert!(matches!(e, PluginError::NotALibrary { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("cannot load it as a dynamic library"),
        "{e}"
    );
    std::fs::remove_file(&text).unwrap();
    // A library without the entry point.
    let e = load("libm.so.6").unwrap_err();
    assert!(matches!(e, PluginError::NotAPlugin { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("not an onnx-diagnostic plugin (no `onnx_diagnostic_plugin` symbol)"),
        "{e}"
    );
    // Another ABI version.
    let mismatch = library("onnx_diagnostic_plugin_mismatch");
    declare("abi");
    match load(&mismatch).unwrap_err() {
        PluginError::AbiVersion { plugin, host, path } => {
            assert_eq!((plugin, host), (999, PLUGIN_ABI_VERSION));
            assert!(path.ends_with(mismatch.file_name().unwrap()));
        }
        other => panic!("{other}"),
    }
    // Same ABI, another core version.
    declare("core");
    let e = load(&mismatch).unwrap_err();
    match &e {
        PluginError::CoreVersion {
            name, plugin, host, ..
        } => {
            assert_eq!(
                (name.as_str(), plugin.as_str(), host.as_str()),
                ("mismatch", "0.0.0-other", CORE_VERSION)
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().ends_with(&format!(
            "plugin mismatch was built with onnx-diagnostic-core 0.0.0-other, this host has \
             {CORE_VERSION}; rebuild the plugin against {CORE_VERSION}"
        )),
        "{e}"
    );
    assert!(loaded().is_empty());
    // The host goes on: the example plugin loads and is the only one loaded.
    let p = load(library("onnx_diagnostic_plugin_example")).unwrap();
    assert_eq!(p.name, "example");
    assert_eq!(loaded().len(), 1);
}
