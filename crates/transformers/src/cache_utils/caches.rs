//! The cache classes: `DynamicCache`, `StaticCache`, transformers 4's `SlidingWindowCache` and
//! `HybridCache`, `EncoderDecoderCache`, `MambaCache`, each a [`CustomObject`].

use onnx_diagnostic_core::{CustomObject, SymInt, Tensor, Value};

use super::{
    input_error,
    layers::{CacheLayer, DynamicLayer, KeyPositions, LayerKind},
};
use crate::error::{Error, Result};

fn key_value_lists(layers: &[CacheLayer]) -> (Value, Value) {
    let ks = layers
        .iter()
        .filter_map(|l| l.keys().cloned().map(Value::Tensor))
        .collect();
    let vs = layers
        .iter()
        .filter_map(|l| l.values().cloned().map(Value::Tensor))
        .collect();
    (Value::List(ks), Value::List(vs))
}

/// The seeds' `string_type` of a key/value cache: `Class(key_cache=#n[...], value_cache=...)`,
/// or `Class(DynamicLayer(k, v), DynamicSlidingWindowLayer(k, v))` when a `DynamicCache`
/// mixes layer kinds (the Python package prints the keys twice there; we print the values).
fn kv_string(
    class: &str,
    layers: &[CacheLayer],
    mixed: bool,
    fmt: &dyn Fn(&Value) -> String,
) -> String {
    if mixed {
        let rows: Vec<String> = layers
            .iter()
            .map(|l| {
                let k = l.keys().map_or(Value::None, |t| Value::Tensor(t.clone()));
                let v = l.values().map_or(Value::None, |t| Value::Tensor(t.clone()));
                format!("{}({}, {})", l.kind().class_name(), fmt(&k), fmt(&v))
            })
            .collect();
        return format!("{class}({})", rows.join(", "));
    }
    let (k, v) = key_value_lists(layers);
    format!("{class}(key_cache={}, value_cache={})", fmt(&k), fmt(&v))
}

fn kv_fields(layers: &[CacheLayer]) -> Vec<(String, Value)> {
    let (k, v) = key_value_lists(layers);
    vec![("key_cache".to_owned(), k), ("value_cache".to_owned(), v)]
}

fn layer_error(layer: usize, e: Error) -> Error {
    match e {
        Error::Core(onnx_diagnostic_core::Error::Input { path, reason }) => {
            input_error(&format!("past_key_values.layers[{layer}].{path}"), reason)
        }
        other => other,
    }
}

/// `DynamicCache`: one dynamic layer (full or sliding-window) per decoder layer.
///
/// The models also run on it the layers of the static classes ([`StaticCache`],
/// [`HybridCache`], [`SlidingWindowCache`]), which `causal_lm_forward` unwraps and wraps back.
#[derive(Clone, Debug, Default)]
pub struct DynamicCache {
    /// The layers.
    pub layers: Vec<CacheLayer>,
    /// The positions of the new tokens during a forward (`cache_position`, `[seq]` int64), set
    /// by the model for its static layers; `None` outside a forward.
    pub cache_position: Option<Tensor>,
}

impl DynamicCache {
    /// A cache from `(key, value)` pairs, one [`DynamicLayer`] per pair
    /// (`make_dynamic_cache`).
    pub fn from_pairs(pairs: Vec<(Tensor, Tensor)>) -> Self {
        Self {
            layers: pairs
                .into_iter()
                .map(|(k, v)| {
                    CacheLayer::Dynamic(DynamicLayer {
                        keys: Some(k),
                        values: Some(v),
                    })
                })
                .collect(),
            cache_position: None,
        }
    }

    /// An empty cache whose layers are of the given kinds (`DynamicCache(config=...)`: sliding
    /// layers for a model with a sliding window).
    pub fn with_layers(kinds: &[LayerKind]) -> Self {
        Self {
            layers: kinds.iter().map(|k| k.layer()).collect(),
            cache_position: None,
        }
    }

    /// Appends `keys`/`values` to layer `layer` and returns what attention reads. Layers
    /// missing below `layer` are created as [`DynamicLayer`]s.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn update(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        layer: usize,
    ) -> Result<(Tensor, Tensor)> {
        while self.layers.len() <= layer {
            self.layers
                .push(CacheLayer::Dynamic(DynamicLayer::default()));
        }
        let at = self.cache_position.as_ref();
        self.layers[layer]
            .update_at(keys, values, at)
            .map_err(|e| layer_error(layer, e))
    }

    /// The number of positions seen by layer 0 (0 when empty).
    ///
    /// # Errors
    /// Any error reading the size.
    pub fn get_seq_length(&self) -> Result<SymInt> {
        match self.layers.first() {
            Some(l) => l.get_seq_length(),
            None => Ok(SymInt::new(0)),
        }
    }

    /// The number of positions seen before the new ones: the length of the first full
    /// ([`DynamicLayer`]) layer, else `attention_mask`'s length minus `query_length`, else
    /// layer 0's count. transformers reads layer 0's count; a sliding layer flattened across an
    /// export boundary keeps its tensors but not its count, so the exact sources come first
    /// (they agree with the count on every consistent input).
    ///
    /// # Errors
    /// Any error reading a size.
    pub fn past_length(
        &self,
        attention_mask: Option<&Tensor>,
        query_length: &SymInt,
    ) -> Result<SymInt> {
        if let Some(full) = self.layers.iter().find(|l| l.kind() == LayerKind::Dynamic) {
            return full.stored_length();
        }
        let sliding = self
            .layers
            .iter()
            .any(|l| matches!(l.kind(), LayerKind::DynamicSlidingWindow(_)));
        match attention_mask {
            Some(m) if sliding && m.rank() == 2 => Ok(&m.size(1)? - query_length),
            _ => self.get_seq_length(),
        }
    }

    /// The key positions of layer `layer` ([`CacheLayer::key_positions`]); a layer not
    /// created yet reads the new positions only.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn key_positions(
        &self,
        layer: usize,
        past: &SymInt,
        query_length: &SymInt,
        cache_position: &Tensor,
    ) -> Result<KeyPositions> {
        match self.layers.get(layer) {
            Some(l) => l.key_positions(past, query_length, cache_position),
            None => Ok(KeyPositions::Range {
                offset: past.clone(),
                length: query_length.clone(),
            }),
        }
    }

    /// Removes the last `tokens` positions of every layer.
    ///
    /// # Errors
    /// As [`CacheLayer::crop`].
    pub fn crop(&mut self, tokens: i64) -> Result<()> {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.crop(tokens).map_err(|e| layer_error(i, e))?;
        }
        Ok(())
    }

    /// Reorders the batch of every layer (beam search).
    ///
    /// # Errors
    /// As [`CacheLayer::reorder`].
    pub fn reorder_cache(&mut self, beam_idx: &Tensor) -> Result<()> {
        for l in &mut self.layers {
            l.reorder(beam_idx)?;
        }
        Ok(())
    }

    /// Whether the layers are not all [`DynamicLayer`]s.
    pub fn is_mixed(&self) -> bool {
        self.layers.iter().any(|l| l.kind() != LayerKind::Dynamic)
    }

    /// The cache of an optional `past_key_values` input (`None`: no cache).
    ///
    /// # Errors
    /// [`Error::Core`] when the input is something else than a `DynamicCache` or `None`.
    pub fn from_value(value: &Value) -> Result<Option<Self>> {
        match value {
            Value::None => Ok(None),
            v => v
                .downcast_ref::<DynamicCache>()
                .cloned()
                .map(Some)
                .ok_or_else(|| {
                    input_error(
                        "past_key_values",
                        format!("expected a DynamicCache or None, got {}", v.kind_name()),
                    )
                }),
        }
    }
}

impl CustomObject for DynamicCache {
    fn class_name(&self) -> &str {
        "DynamicCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        kv_fields(&self.layers)
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        kv_string("DynamicCache", &self.layers, self.is_mixed(), fmt)
    }
}

/// `StaticCache`: preallocated layers (full or sliding-window) written at the cache position.
#[derive(Clone, Debug, Default)]
pub struct StaticCache {
    /// The layers ([`StaticLayer`] or [`StaticSlidingWindowLayer`]).
    pub layers: Vec<CacheLayer>,
}

impl StaticCache {
    /// The number of positions written in layer 0.
    ///
    /// # Errors
    /// Any error reading a size.
    pub fn get_seq_length(&self) -> Result<SymInt> {
        match self.layers.first() {
            Some(l) => l.get_seq_length(),
            None => Ok(SymInt::new(0)),
        }
    }

    /// Writes `keys`/`values` into layer `layer` and returns what attention reads.
    ///
    /// # Errors
    /// [`Error::Core`] for a layer the cache does not have; any error of the ops.
    pub fn update(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        layer: usize,
    ) -> Result<(Tensor, Tensor)> {
        let n = self.layers.len();
        let l = self.layers.get_mut(layer).ok_or_else(|| {
            input_error(
                "past_key_values",
                format!("layer {layer} of a static cache of {n} layers"),
            )
        })?;
        l.update(keys, values).map_err(|e| layer_error(layer, e))
    }
}

/// Builds a static cache of `kinds` filled with `pairs` written from position 0.
pub(super) fn make_static_layers(
    pairs: Vec<(Tensor, Tensor)>,
    kinds: &[LayerKind],
) -> Result<StaticCache> {
    let mut cache = StaticCache {
        layers: kinds.iter().map(|k| k.layer()).collect(),
    };
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        cache.update(&k, &v, i)?;
    }
    Ok(cache)
}

impl CustomObject for StaticCache {
    fn class_name(&self) -> &str {
        "StaticCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        kv_fields(&self.layers)
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        kv_string("StaticCache", &self.layers, false, fmt)
    }
}

/// `SlidingWindowCache` (transformers 4.x): a static cache whose layers all slide.
#[derive(Clone, Debug, Default)]
pub struct SlidingWindowCache(pub StaticCache);

impl CustomObject for SlidingWindowCache {
    fn class_name(&self) -> &str {
        "SlidingWindowCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        kv_fields(&self.0.layers)
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        kv_string("SlidingWindowCache", &self.0.layers, false, fmt)
    }
}

/// `HybridCache` (transformers 4.x, Gemma 2/3): a static cache mixing sliding-window and full
/// layers.
#[derive(Clone, Debug, Default)]
pub struct HybridCache(pub StaticCache);

impl CustomObject for HybridCache {
    fn class_name(&self) -> &str {
        "HybridCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        kv_fields(&self.0.layers)
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        kv_string("HybridCache", &self.0.layers, false, fmt)
    }
}

/// `EncoderDecoderCache`: the decoder's self-attention cache and the cross-attention cache over
/// the encoder's states.
#[derive(Clone, Debug, Default)]
pub struct EncoderDecoderCache {
    /// Self-attention cache (grows with the generated tokens).
    pub self_attention_cache: DynamicCache,
    /// Cross-attention cache (fixed by the encoder's output).
    pub cross_attention_cache: DynamicCache,
}

impl CustomObject for EncoderDecoderCache {
    fn class_name(&self) -> &str {
        "EncoderDecoderCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        vec![
            (
                "self_attention_cache".to_owned(),
                Value::custom(self.self_attention_cache.clone()),
            ),
            (
                "cross_attention_cache".to_owned(),
                Value::custom(self.cross_attention_cache.clone()),
            ),
        ]
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        let f = self.fields();
        format!(
            "EncoderDecoderCache(self_attention_cache={}, cross_attention_cache={})",
            fmt(&f[0].1),
            fmt(&f[1].1)
        )
    }
}

/// `MambaCache` (transformers 4.x): per layer, the convolution state and the SSM state.
#[derive(Clone, Debug, Default)]
pub struct MambaCache {
    /// Convolution states `[batch, intermediate, conv_kernel]`, one per layer.
    pub conv_states: Vec<Tensor>,
    /// SSM states `[batch, intermediate, state_size]`, one per layer.
    pub ssm_states: Vec<Tensor>,
}

impl CustomObject for MambaCache {
    fn class_name(&self) -> &str {
        "MambaCache"
    }
    fn fields(&self) -> Vec<(String, Value)> {
        let list = |ts: &[Tensor]| Value::List(ts.iter().cloned().map(Value::Tensor).collect());
        vec![
            ("conv_states".to_owned(), list(&self.conv_states)),
            ("ssm_states".to_owned(), list(&self.ssm_states)),
        ]
    }
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        let f = self.fields();
        format!(
            "MambaCache(conv_states={}, ssm_states={})",
            fmt(&f[0].1),
            fmt(&f[1].1)
        )
    }
}
