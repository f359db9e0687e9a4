//! onnx-diagnostic: exports models to ONNX and tells why an export fails and how far the ONNX
//! file is from the eager model. This crate is the facade (DESIGN.md section 2): it re-exports
//! the workspace's crates behind features, so a project depends on one crate and picks what it
//! needs.
//!
//! | feature | brings | default |
//! |---|---|---|
//! | `torch` | the exporter's own fixes ([`patch_torch`]) | yes |
//! | `transformers` | [`transformers`] models, caches, tasks; [`patch_transformers`]; [`serialization`] | yes |
//! | `diffusers` | [`diffusers`] models; [`patch_diffusers`]; [`serialization`] | no |
//! | `rewrite` | [`rewrite`]: control-flow rewriting | no |
//! | `plugins` | [`plugins`]: loading plugin libraries | no |
//! | `onnx` | [`onnx`]: lowering, the ONNX Runtime runner, `max_diff` | yes |
//! | `full` | all of the above | no |
//! | `cli` | `full`, and [`cli`]: the command line as a library | no |
//!
//! The engine ([`core`], also re-exported at the top level) is always there.
//!
//! **Linking.** Patches and serializers are declared at link time, and a linker drops the object
//! files of a library nothing refers to, with their declarations. [`torch_export_patches`] and
//! [`register_cache_serialization`] of this crate refer to every patch and serializer crate the
//! features enable before doing what core's functions do, so their entries are present without
//! any other call; [`link`] does only that. (Core's own `onnx_diagnostic::core::
//! torch_export_patches` does not: use the top-level one.)
//!
//! A whole program (Tiny-LLM from the catalog, exported, lowered, run in ONNX Runtime and
//! compared with eager) is `tests/fixtures/outside_project.rs`: the tests build and run it as a
//! cargo project of its own that depends on this crate with `transformers` and `onnx` only.

pub use onnx_diagnostic_core as core;
pub use onnx_diagnostic_core::*;
/// The `tch` the engine is built on (tensors' `Kind` and `Device`), so that a project names the
/// same version.
pub use tch;

#[cfg(feature = "cli")]
pub use onnx_diagnostic_cli as cli;
#[cfg(feature = "diffusers")]
pub use onnx_diagnostic_diffusers as diffusers;
#[cfg(feature = "onnx")]
pub use onnx_diagnostic_onnx as onnx;
#[cfg(feature = "diffusers")]
pub use onnx_diagnostic_patch_diffusers as patch_diffusers;
#[cfg(feature = "torch")]
pub use onnx_diagnostic_patch_torch as patch_torch;
#[cfg(feature = "transformers")]
pub use onnx_diagnostic_patch_transformers as patch_transformers;
#[cfg(feature = "plugins")]
pub use onnx_diagnostic_plugins as plugins;
#[cfg(feature = "rewrite")]
pub use onnx_diagnostic_rewrite as rewrite;
#[cfg(any(feature = "transformers", feature = "diffusers"))]
pub use onnx_diagnostic_serialization as serialization;
#[cfg(feature = "transformers")]
pub use onnx_diagnostic_transformers as transformers;

/// The features this build of the facade was compiled with, in the table's order.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "torch")]
    "torch",
    #[cfg(feature = "transformers")]
    "transformers",
    #[cfg(feature = "diffusers")]
    "diffusers",
    #[cfg(feature = "rewrite")]
    "rewrite",
    #[cfg(feature = "plugins")]
    "plugins",
    #[cfg(feature = "onnx")]
    "onnx",
    #[cfg(feature = "cli")]
    "cli",
];

/// Keeps the link-time patches and serializers of every enabled crate in the binary (see the
/// crate doc) and returns the names of the patches registered, in registry order.
pub fn link() -> Vec<&'static str> {
    #[cfg(feature = "torch")]
    let _ = onnx_diagnostic_patch_torch::patches();
    #[cfg(feature = "transformers")]
    let _ = onnx_diagnostic_patch_transformers::patches();
    #[cfg(feature = "diffusers")]
    let _ = onnx_diagnostic_patch_diffusers::patches();
    #[cfg(any(feature = "transformers", feature = "diffusers"))]
    let _ = onnx_diagnostic_serialization::supported_classes();
    patches::registered_patches()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// [`core::torch_export_patches`] after [`link`]: applies the serializers and patches the
/// options ask for, in the calling thread, until the guard is dropped.
///
/// # Errors
/// As [`core::torch_export_patches`].
pub fn torch_export_patches(options: PatchOptions) -> Result<PatchGuard> {
    let _ = link();
    core::torch_export_patches(options)
}

/// [`core::register_cache_serialization`] after [`link`]: registers the serializers of the
/// families switched on, in the calling thread, until the guard is dropped.
#[cfg(any(feature = "transformers", feature = "diffusers"))]
pub fn register_cache_serialization(
    patch_transformers: bool,
    patch_diffusers: bool,
    verbose: u8,
) -> SerializationGuard {
    let _ = link();
    onnx_diagnostic_serialization::register_cache_serialization(
        patch_transformers,
        patch_diffusers,
        verbose,
    )
}
