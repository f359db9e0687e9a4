//! `patched_*` entries for the models of `onnx-diagnostic-transformers` (family
//! `transformers`), applied by `torch_export_patches(PatchOptions { patch_transformers: true,
//! .. })`. Each says what it replaces, why export needs it and when it can go; each has a test
//! showing the export failing (or wrong) without it and matching eager with it.
//!
//! | patch | export problem |
//! |---|---|
//! | `patched_LlamaRotaryEmbedding.forward` (also `MistralRotaryEmbedding`, `Qwen2RotaryEmbedding`, `PhiRotaryEmbedding`, `Phi3RotaryEmbedding`, `SmolLM3RotaryEmbedding`, `GemmaRotaryEmbedding`, `Gemma2RotaryEmbedding`, `Gemma3RotaryEmbedding`, `Qwen3RotaryEmbedding`, `Qwen3MoeRotaryEmbedding` and `MixtralRotaryEmbedding`: the same struct) | the `dynamic` rope update branches on `max(position_ids) + 1`; the patch uses `cond` |
//! | `patched_VisionAttention.forward` (Qwen2-VL) | the attention loops over the frames of `cu_seqlens.tolist()`; the patch masks the other frames (see [`qwen2_vl`]) |
//! | `patched_Qwen2VisionTransformerPretrainedModel.forward` (also Qwen2.5-VL's `Qwen2_5_VisionTransformerPretrainedModel`: the same struct) | the position ids and Qwen2.5-VL's window order loop over `grid_thw.tolist()`; the patch computes them from the patch index |
//! | `patched_Qwen2VLModel.get_image_features` | the features are split per image with `.tolist()` sizes; the patch keeps them whole, as the forward concatenates them |
//! | `patched_Gemma3Model.get_placeholder_mask` | the placeholder count is checked with a `raise` on the data; the patch records the check in the graph (see [`gemma3`]) |
//! | `patched_IdeficsAttention.forward` | the rotary length is `max(key_len + cache_position[0], q_len)`, a value of the data compared in Python; the patch takes it from the sizes (see [`idefics`]) |
//! | `patched_IdeficsEmbedding.forward` | the cos/sin tables grow `if seq_len > max_seq_len_cached`, a guard that limits the export to the cached length; the patch keeps both branches with `cond` |
//! | `patched_SamMaskDecoder.forward` | the prompt tokens are joined after an `if` on their sum; the patch chooses with `cond`, the token count becoming a symbol (see [`sam`]) |
//! | `patched_Qwen3MoeSparseMoeBlock.forward` (also `MixtralSparseMoeBlock`: the same struct), with its `_forward_expert_loop` | the expert loop runs over the data-dependent list of experts hit; the patch loops over every expert, each in a `cond` on whether a token chose it, on its tokens only |

pub mod gemma3;
pub mod idefics;
pub mod qwen2_vl;
pub mod sam;

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::models::{
    llama::LlamaRotaryEmbedding,
    qwen3_moe::{Qwen3MoeExperts, Qwen3MoeSparseMoeBlock, Routing},
};
use tch::Kind;

/// Replaces `LlamaRotaryEmbedding.forward`, whose `dynamic` rope update (transformers'
/// `dynamic_rope_update`) reads `max(position_ids) + 1` as a number and branches on it: a
/// data-dependent branch that cannot be exported. The patch computes the frequencies of the
/// grown base for the current length as tensors and chooses between them and the original
/// ones with `cond(seq_len > max_position_embeddings, ...)`, as the seeds'
/// `patched_dynamic_rope_update` does with `torch.cond` (an `If` node in ONNX). Other rope
/// types run the original code. It can go when the model code computes the update without
/// reading the data.
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

/// Replaces `Qwen3MoeSparseMoeBlock.forward` (and `MixtralSparseMoeBlock.forward`, the same
/// struct), whose experts loop (transformers' eager `Qwen3MoeExperts.forward`) iterates over
/// `nonzero(expert_mask.sum(...) > 0)`: the number of experts hit depends on the routing, so
/// torch.export (and this engine) stop on the data-dependent loop. As the seeds'
/// `patched_Qwen3MoeSparseMoeBlock` does, the patch loops over every expert with a static
/// count and wraps each expert in `cond(expert_sum[e] > 0, _forward_expert_loop, clone)`: an
/// expert no token chose costs nothing at run time, and one that was chosen runs on its own
/// tokens only (`nonzero` of its mask gives a data-dependent count of rows, gathered, computed
/// and added back with `index_add`), never on every token. The routing (softmax, top-k,
/// `norm_topk_prob`) and the arithmetic are the original's, so the outputs are the same. It
/// can go when exporters handle a loop over a data-dependent list (transformers' other experts
/// implementations, `batched_mm` and `grouped_mm`, compute every expert or use kernels the
/// ONNX standard does not have).
#[patch(target = Qwen3MoeSparseMoeBlock::forward, family = "transformers")]
pub fn patched_moe_forward(
    this: &Qwen3MoeSparseMoeBlock,
    hidden_states: &Tensor,
) -> Result<Tensor> {
    let _s = onnx_diagnostic_core::scope("mlp");
    let Routing {
        tokens: h,
        weights: routing_weights,
        experts: selected_experts,
    } = this.route(hidden_states)?;
    let experts = this.experts();
    let n = experts.num_experts();
    let _e = onnx_diagnostic_core::scope("experts");
    // [experts, top_k, tokens], and the number of (token, slot) pairs of each expert.
    let expert_mask = selected_experts.one_hot(n)?.permute(&[2, 1, 0])?;
    let expert_sum = expert_mask.sum(&[-1, -2], false)?;
    let mut out = Tensor::zeros(h.shape(), h.kind(), h.device())?;
    for e in 0..n {
        let chosen = expert_sum.select(0, e)?.gt_scalar(0)?;
        let operands = [
            out,
            expert_mask.select(0, e)?,
            h.clone(),
            routing_weights.clone(),
        ];
        out = onnx_diagnostic_core::cond(
            &chosen,
            |x| {
                Ok(vec![forward_expert_loop(
                    experts, &x[0], &x[1], &x[2], &x[3], e,
                )?])
            },
            |x| Ok(vec![x[0].copy()?]),
            &operands,
        )?
        .remove(0);
    }
    out.reshape(hidden_states.shape())
}

/// The seeds' `_forward_expert_loop`: expert `e` on the tokens its mask `[top_k, tokens]`
/// selects, weighted by their routing weights and added into `out`.
fn forward_expert_loop(
    experts: &Qwen3MoeExperts,
    out: &Tensor,
    mask: &Tensor,
    h: &Tensor,
    routing_weights: &Tensor,
    e: i64,
) -> Result<Tensor> {
    let rows = mask.nonzero_tuple()?;
    let (slot, token) = (&rows[0], &rows[1]);
    let y = experts.expert_forward(e, &h.index_select(0, token)?)?;
    let w = routing_weights.index(&[token, slot])?.unsqueeze(-1)?;
    out.index_add(0, token, &y.mul(&w)?.to_kind(out.kind())?)
}

/// The all-experts form of the block, for comparison (benches): every expert on every token,
/// weighted by a dense `[tokens, experts]` routing matrix (zero where a token did not choose
/// the expert). It exports without control flow and computes `num_experts / top_k` times the
/// work of [`patched_moe_forward`]; supply it as a custom patch of
/// `Qwen3MoeSparseMoeBlock.forward` to export that form.
///
/// # Errors
/// Any error of the ops.
pub fn dense_moe_forward(this: &Qwen3MoeSparseMoeBlock, hidden_states: &Tensor) -> Result<Tensor> {
    let _s = onnx_diagnostic_core::scope("mlp");
    let Routing {
        tokens: h,
        weights: routing_weights,
        experts: selected_experts,
    } = this.route(hidden_states)?;
    let experts = this.experts();
    let tokens = h.size(0)?;
    let dense = Tensor::zeros(
        vec![tokens, SymInt::new(experts.num_experts())],
        routing_weights.kind(),
        h.device(),
    )?
    .scatter_add(1, &selected_experts, &routing_weights)?;
    // [experts, tokens, hidden]
    let y = experts.all_experts_forward(&h)?;
    let w = dense.transpose(0, 1)?.unsqueeze(-1)?;
    y.mul(&w)?
        .sum(&[0], false)?
        .to_kind(h.kind())?
        .reshape(hidden_states.shape())
}

/// The HF class names whose Rust model shares a patched struct, with that struct: their
/// patches are the struct's (`MistralRotaryEmbedding` is `LlamaRotaryEmbedding`).
pub fn shared_classes() -> &'static [(&'static str, &'static str)] {
    // The compiler checks that each is the struct.
    use onnx_diagnostic_transformers::models::{
        gemma, gemma2, gemma3, mistral, mixtral, phi, phi3, qwen2, qwen3, qwen3_moe, smollm3,
    };
    let _: [fn(&LlamaRotaryEmbedding) -> &LlamaRotaryEmbedding; 11] = [
        |x: &qwen3::Qwen3RotaryEmbedding| x,
        |x: &qwen3_moe::Qwen3MoeRotaryEmbedding| x,
        |x: &mixtral::MixtralRotaryEmbedding| x,
        |x: &gemma::GemmaRotaryEmbedding| x,
        |x: &gemma2::Gemma2RotaryEmbedding| x,
        |x: &gemma3::Gemma3RotaryEmbedding| x,
        |x: &mistral::MistralRotaryEmbedding| x,
        |x: &phi::PhiRotaryEmbedding| x,
        |x: &phi3::Phi3RotaryEmbedding| x,
        |x: &qwen2::Qwen2RotaryEmbedding| x,
        |x: &smollm3::SmolLM3RotaryEmbedding| x,
    ];
    let _: [fn(&Qwen3MoeSparseMoeBlock) -> &Qwen3MoeSparseMoeBlock; 1] =
        [|x: &mixtral::MixtralSparseMoeBlock| x];
    &[
        ("GemmaRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Gemma2RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Gemma3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("MistralRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("PhiRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Phi3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Qwen2RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("SmolLM3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Qwen3RotaryEmbedding", "LlamaRotaryEmbedding"),
        ("Qwen3MoeRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("MixtralRotaryEmbedding", "LlamaRotaryEmbedding"),
        ("MixtralSparseMoeBlock", "Qwen3MoeSparseMoeBlock"),
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
    let _ = patched_moe_forward as fn(&Qwen3MoeSparseMoeBlock, &Tensor) -> Result<Tensor>;
    let _ = gemma3::patched_get_placeholder_mask;
    let _ = qwen2_vl::patched_get_image_features;
    let _ = qwen2_vl::patched_qwen2_vision_forward;
    let _ = qwen2_vl::patched_vision_attention_forward;
    onnx_diagnostic_core::patches::registered_patches()
        .into_iter()
        .filter(|p| p.family == onnx_diagnostic_core::patches::PatchFamily::Transformers)
        .map(|p| p.name)
        .collect()
}
