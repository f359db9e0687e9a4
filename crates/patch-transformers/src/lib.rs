//! `patched_*` entries for the models of `onnx-diagnostic-transformers` (family
//! `transformers`). Filled by the patches issue.
