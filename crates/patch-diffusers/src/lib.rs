//! `patched_*` entries for the models of `onnx-diagnostic-diffusers` (family `diffusers`).
//! Filled by the patches issue.
