//! An example plugin: what a team ships to make its models export with our CLI and API,
//! without rebuilding onnx-diagnostic. Built as a `cdylib` (and an rlib, so that the
//! workspace's tests build its library file; they never link it).
//!
//! It carries the team's own transformers support, used with the built-in transformers
//! support switched off (`--patch patch_transformers=False`):
//! - `patched_LlamaRotaryEmbedding.forward`: the `dynamic` rope update, written with
//!   `where_cond` (both frequency sets computed, the larger positions pick the grown one)
//!   where crates/patch-transformers uses `cond`; it replaces the built-in patch when both are
//!   on (a custom patch wins, as the seeds' custom patches do). It handles the `dynamic` rope
//!   type only and asserts so: a model with another rope type makes it panic, which the host
//!   reports as an error naming this plugin and the patch.
//! - the serializers of `DynamicCache` and `CausalLMOutputWithPast` (family `custom`),
//!   delegating to the workspace's.

use onnx_diagnostic_core::serialization::DataclassSerializer;
use onnx_diagnostic_core::{
    CustomObject, Family, Result, Serializer, Tensor, Value, register_serializer, scope,
};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_serialization::DynamicCacheSerializer;
use onnx_diagnostic_transformers::{
    modeling_outputs::CausalLMOutputWithPast, models::llama::LlamaRotaryEmbedding,
};
use tch::Kind;

onnx_diagnostic_plugins::export_plugin!(name = "example", version = env!("CARGO_PKG_VERSION"));

/// The `dynamic` rope update without a data-dependent branch: transformers' `if seq_len >
/// max_seq_len_cached` reads a tensor as a number (an export error), so both frequency sets
/// are computed from the largest position as tensors and `where_cond` picks one. It can go
/// when the built-in patch is used instead (`patch_transformers=True`). Panics on a rope type
/// other than `dynamic` (this plugin's declared scope).
#[patch(target = LlamaRotaryEmbedding::forward)]
#[allow(clippy::expect_used)]
pub fn dynamic_rope_with_where(
    rope: &LlamaRotaryEmbedding,
    position_ids: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let _s = scope("rotary_emb");
    let (factor, max_pos, dim, base) = rope
        .dynamic_parameters()
        .expect("the example plugin patches the `dynamic` rope type only");
    let d = dim as f64;
    // _compute_dynamic_ntk_parameters, in double precision as the eager update computes it.
    let seq_len = position_ids
        .amax(&[], false)?
        .to_kind(Kind::Double)?
        .add_scalar(1.0)?;
    let grown_base = seq_len
        .mul_scalar(factor / max_pos as f64)?
        .add_scalar(1.0 - factor)?
        .pow_scalar(d / (d - 2.0))?
        .mul_scalar(base)?;
    let exponents = Tensor::arange(0, dim, 2, Kind::Int64, position_ids.device())?
        .to_kind(Kind::Double)?
        .div_scalar(-d)?;
    let grown = grown_base.pow(&exponents)?.to_kind(Kind::Float)?;
    let inv_freq = grown.where_cond(&seq_len.gt_scalar(max_pos as f64)?, rope.inv_freq())?;
    rope.cos_sin(position_ids, &inv_freq)
}

/// `DynamicCache` flattened as the workspace flattens it, registered by this plugin (family
/// `custom`) so that it works with the built-in transformers support off.
pub struct TeamDynamicCache;

impl Serializer for TeamDynamicCache {
    fn class_name(&self) -> &'static str {
        "DynamicCache"
    }
    fn family(&self) -> Family {
        Family::Custom
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        DynamicCacheSerializer.flatten_with_keys(obj)
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        DynamicCacheSerializer.unflatten(values, context)
    }
}

register_serializer!(TeamDynamicCache);
register_serializer!(DataclassSerializer::<CausalLMOutputWithPast>::new(
    Family::Custom
));
