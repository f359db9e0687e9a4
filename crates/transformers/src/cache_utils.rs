//! The KV cache of the decoder-only models, explicit input and output of `forward`
//! (transformers' `cache_utils.DynamicCache` with `DynamicLayer`s).
//!
//! Until the pytree issue registers it as a custom class, it crosses the export boundary as a
//! dict `{key_0, value_0, key_1, value_1, ...}`, which flattens to the names onnx-diagnostic
//! gives a flattened `DynamicCache` (`past_key_values_key_0`, `past_key_values_value_0`, ...).

use onnx_diagnostic_core::{SymInt, Tensor, Value};

use crate::error::{Error, Result};

/// One layer of a [`DynamicCache`]: keys and values `[batch, kv_heads, seq, head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct DynamicLayer {
    /// Cached keys (`None` before the first update).
    pub keys: Option<Tensor>,
    /// Cached values.
    pub values: Option<Tensor>,
}

/// A cache growing along the sequence dimension, one [`DynamicLayer`] per decoder layer.
#[derive(Clone, Debug, Default)]
pub struct DynamicCache {
    /// The layers.
    pub layers: Vec<DynamicLayer>,
}

impl DynamicCache {
    /// A cache from `(key, value)` pairs, one per layer (`make_dynamic_cache`).
    pub fn from_pairs(pairs: Vec<(Tensor, Tensor)>) -> Self {
        Self {
            layers: pairs
                .into_iter()
                .map(|(k, v)| DynamicLayer {
                    keys: Some(k),
                    values: Some(v),
                })
                .collect(),
        }
    }

    /// Appends `keys`/`values` to layer `layer` and returns the layer's full keys and values.
    ///
    /// # Errors
    /// Any error of the concatenation.
    pub fn update(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        layer: usize,
    ) -> Result<(Tensor, Tensor)> {
        while self.layers.len() <= layer {
            self.layers.push(DynamicLayer::default());
        }
        let l = &mut self.layers[layer];
        let (k, v) = match (&l.keys, &l.values) {
            (Some(pk), Some(pv)) => (
                Tensor::cat(&[pk, keys], -2)?,
                Tensor::cat(&[pv, values], -2)?,
            ),
            _ => (keys.clone(), values.clone()),
        };
        l.keys = Some(k.clone());
        l.values = Some(v.clone());
        Ok((k, v))
    }

    /// The number of cached positions (of layer 0; 0 when empty).
    ///
    /// # Errors
    /// Any error reading the size.
    pub fn get_seq_length(&self) -> Result<SymInt> {
        match self.layers.first().and_then(|l| l.keys.as_ref()) {
            Some(k) => Ok(k.size(-2)?),
            None => Ok(SymInt::new(0)),
        }
    }

    /// The cache as a dict `{key_0, value_0, ...}` (see the module doc).
    pub fn to_value(&self) -> Value {
        let mut entries = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let (Some(k), Some(v)) = (&l.keys, &l.values) {
                entries.push((format!("key_{i}"), Value::Tensor(k.clone())));
                entries.push((format!("value_{i}"), Value::Tensor(v.clone())));
            }
        }
        Value::Dict(entries)
    }

    /// The cache from a dict `{key_0, value_0, ...}` or `None` (no cache).
    ///
    /// # Errors
    /// [`Error::Config`]-free input error naming the missing entry.
    pub fn from_value(value: &Value) -> Result<Option<Self>> {
        let entries = match value {
            Value::None => return Ok(None),
            Value::Dict(entries) => entries,
            other => {
                return Err(Error::Core(onnx_diagnostic_core::Error::Input {
                    path: "past_key_values".to_owned(),
                    reason: format!(
                        "expected a DynamicCache as a dict key_i/value_i, got {}",
                        other.kind_name()
                    ),
                }));
            }
        };
        let find = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_tensor().cloned())
        };
        let mut pairs = Vec::new();
        for i in 0.. {
            match (find(&format!("key_{i}")), find(&format!("value_{i}"))) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                (None, None) => break,
                _ => {
                    return Err(Error::Core(onnx_diagnostic_core::Error::Input {
                        path: format!("past_key_values.layer_{i}"),
                        reason: "a key without its value, or the reverse".to_owned(),
                    }));
                }
            }
        }
        Ok(Some(Self::from_pairs(pairs)))
    }
}
