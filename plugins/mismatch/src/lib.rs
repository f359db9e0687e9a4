//! A library that looks like an onnx-diagnostic plugin but is built against something else:
//! the handshake of crates/plugins must refuse it with a typed error, never call into it.
//! It writes the descriptor's C layout by hand (ABI version 2: `u32`, two strings, the build
//! fingerprint, four strings, `init`), as a plugin of another version would.
//!
//! `ONNX_DIAGNOSTIC_MISMATCH` picks what is wrong: `abi` (the default) declares ABI version
//! 999; `core` declares ABI version 2 with onnx-diagnostic-core `0.0.0-other`.

#![allow(unsafe_code)]

use std::ffi::c_char;

/// The descriptor's layout in ABI version 2.
#[repr(C)]
pub struct Descriptor {
    abi_version: u32,
    core_version: *const c_char,
    rustc: *const c_char,
    build: u64,
    build_info: *const c_char,
    name: *const c_char,
    version: *const c_char,
    init: extern "C" fn(*const u8) -> *const u8,
}

extern "C" fn init(_: *const u8) -> *const u8 {
    // Never called: the handshake stops before.
    std::process::abort()
}

/// The entry point, with a wrong declaration.
#[unsafe(no_mangle)]
pub extern "C" fn onnx_diagnostic_plugin() -> *const Descriptor {
    let core = std::env::var("ONNX_DIAGNOSTIC_MISMATCH").is_ok_and(|v| v == "core");
    Box::into_raw(Box::new(Descriptor {
        abi_version: if core { 2 } else { 999 },
        core_version: c"0.0.0-other".as_ptr(),
        rustc: c"rustc 0.0.0".as_ptr(),
        build: 0,
        build_info: c"profile=other".as_ptr(),
        name: c"mismatch".as_ptr(),
        version: c"0.0.0".as_ptr(),
        init,
    }))
}
