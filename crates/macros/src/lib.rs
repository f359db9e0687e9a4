//! Procedural macros of onnx-diagnostic: `#[patchable]` and `#[patch]` (DESIGN.md section 3,
//! "Patches"). Nothing is implemented yet; the patches issue fills this crate.
