//! `patched_*` entries for the models of `onnx-diagnostic-transformers` (family
//! `transformers`), applied by `torch_export_patches(PatchOptions { patch_transformers: true,
//! .. })`. Each says what it replaces, why export needs it and when it can go; each has a test
//! showing the export failing (or wrong) without it and matching eager with it.
//!
//! | patch | export problem |
//! |---|---|
//! | `patched_LlamaRotaryEmbedding.forward` (also `MistralRotaryEmbedding`, `Qwen2RotaryEmbedding`, `PhiRotaryEmbedding`, `Phi3RotaryEmbedding`, `SmolLM3RotaryEmbedding`, `GemmaRotaryEmbedding`, `Gemma2RotaryEmbedding` and `Gemma3RotaryEmbedding`: the same struct) | the `dynamic` rope update branches on `max(position_ids) + 1`; the patch uses `cond` |

use onnx_diagnostic_core::{Result, Tensor};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::models::llama::LlamaRotaryEmbedding;
use tch::Kind;

/// Replaces `LlamaRotaryEmbedding.forward`, whose `dynamic` rope update (transformers'
/// `dynamic_rope_update`) reads `max(position_ids) + 1` as a number and branches on it: a
/// data-dependent branch that cannot be exported. The patch computes the frequencies of the
/// grown base for the current length as tensors and chooses between them and the original
/// ones with `cond(seq_len > max_position_embeddings, ...)`, as the seeds'
/// `patched_dynamic_rope_update` does with `torch.cond` (an `If` node in ONNX). Other rope types run the original code. It can go
/// when the model code computes the update without reading the data.
#[patch(target = LlamaRotaryEmbedding::forward, family = "transformers")]
pub fn patched_rotary_forward(
    this: &LlamaRotaryEmbedding,
    position_ids: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let Some((factor, max_pos, dim, base)) = this.dynamic_parameters() else {
        // Nothing data-dependent: the original update (none, or longrope's `where` between
        // its short and long factors), as the original code computes it.
        return this.cos_sin(position_ids, &this.frequencies(position_ids)?);
    };
    let _s = onnx_diagnostic_core::scope("rotary_emb");
    let seq_len = position_ids
        .amax(&[], false)?
        .to_kind(Kind::Float)?
        .add_scalar(1.0)?;
    let d = dim as f64;
    // base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    let grown_base = seq_len
        .mul_scalar(factor / max_pos as f64)?
        .sub_scalar(factor - 1.0)?
        .pow_scalar(d / (d - 2.0))?
        .mul_scalar(base)?;
    let exponents = Tensor::arange(0, dim, 2, Kind::Int64, position_ids.device())?
        .to_kind(Kind::Float)?
        .div_scalar(d)?;
    let grown = grown_base.pow(&exponents)?.pow_scalar(-1.0)?;
    let inv_freq = onnx_diagnostic_core::cond(
        &seq_len.gt_scalar(max_pos as f64)?,
        |x| Ok(vec![x[0].copy()?]),
        |x| Ok(vec![x[1].copy()?]),
        &[grown, this.inv_freq().clone()],
    )?;
    this.cos_sin(position_ids, &inv_freq[0])
}

/// The HF class names whose Rust model shares a patched struct, with that struct: their
/// patches are the struct's (`MistralRotaryEmbedding` is `LlamaRotaryEmbedding`).
pub fn shared_classes() -> &'static [(&'static str, &'static str)] {
    // The compiler checks that each is the struct.
    use onnx_diagnostic_transformers::models::{
        gemma, gemma2, gemma3, mistral, phi, phi3, qwen2, smollm3,
    };
    let _: [fn(&LlamaRotaryEmbedding) -> &LlamaRotaryEmbedding; 8] = [
        |x: &gemma::GemmaRotaryEmbedding| x,
        |x: &gemma2::Gemma2RotaryEmbedding| x,
        |x: &gemma3::Gemma3RotaryEmbedding| x,
        |x: &mistral::MistralRotaryEmbedding| x,
        |x: &phi::PhiRotaryEmbedding| x,
        |x: &phi3::Phi3RotaryEmbedding| x,
        |x: &qwen2::Qwen2RotaryEmbedding| x,
        |x: &smollm3::SmolLM3RotaryEmbedding| x,
    ];
    &[
        ("GemmaRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Gemma2RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Gemma3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("MistralRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("PhiRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Phi3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Qwen2RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("SmolLM3RotaryEmbedding", "LlamaRotaryEmbedding"),
    ]
}

/// The patches of this crate, by name. Calling it (once, anywhere) also keeps the crate's
/// link-time registrations in the binary: a linker drops the object files of a library nothing
/// refers to, and with them their `#[patch]` entries. The CLI calls it; so should a program
/// that only names this crate in its dependencies.
pub fn patches() -> Vec<&'static str> {
    // Refer to every patch of the crate.
    let _ =
        patched_rotary_forward as fn(&LlamaRotaryEmbedding, &Tensor) -> Result<(Tensor, Tensor)>;
    onnx_diagnostic_core::patches::registered_patches()
        .into_iter()
        .filter(|p| p.family == onnx_diagnostic_core::patches::PatchFamily::Transformers)
        .map(|p| p.name)
        .collect()
}
