//! Serializers of the cache and output classes (onnx-diagnostic's
//! `torch_export_patches/serialization`): how each flattens into named tensors and is rebuilt.
//!
//! | class | family | children (keys) |
//! |---|---|---|
//! | `DynamicCache`, `StaticCache`, `SlidingWindowCache`, `HybridCache` | transformers | `key_0, value_0, key_1, ...` |
//! | `EncoderDecoderCache` | transformers | `self_attention_cache`, `cross_attention_cache` |
//! | `MambaCache` | transformers | `conv_states`, `ssm_states` (lists) |
//! | `BaseModelOutput`, `CausalLMOutputWithPast`, `Seq2SeqLMOutput`, `Seq2SeqModelOutput`, `IdeficsCausalLMOutputWithPast`, `SamImageSegmentationOutput` | transformers | the fields that are set |
//! | `UNet2DConditionOutput` | diffusers | `sample` |
//!
//! A key/value cache whose layers are not all of the class's usual kind (a `DynamicCache`
//! mixing full and sliding-window layers, every `HybridCache`) names each layer's kind and
//! window in its keys, as onnx-diagnostic 0.9 does: `key_D_0` (`DynamicLayer`), `key_W4_1`
//! (`DynamicSlidingWindowLayer`, window 4), `key_S_0` (`StaticLayer`), `key_X4_1`
//! (`StaticSlidingWindowLayer`, window 4); the flattened tensors are named, as torch.export
//! names placeholders, in lower case (`past_key_values_key_w4_1`). The package tags the layers
//! of a `DynamicCache` or `HybridCache` only: a `StaticCache` mixing kinds is tagged here too
//! (the package names it `key_<i>` and rebuilds every layer as a full one). So flatten →
//! unflatten keeps every layer's kind and window (transformers' own serialization loses them,
//! its issue #47900). A layer without
//! tensors (not initialised yet) flattens into two `None`s and comes back empty. What is not
//! structure is not kept: a rebuilt layer has seen as many positions as it stores (the Python
//! package rebuilds the same way).
//!
//! The serializers are declared at link time; [`register_cache_serialization`] registers them
//! for the calling thread until its guard is dropped.

use onnx_diagnostic_core::{
    CustomObject, Error, Family, Result, SerializationGuard, Serializer, Tensor, Value,
    register_serializer,
    serialization::{DataclassSerializer, downcast},
};
use onnx_diagnostic_diffusers::UNet2DConditionOutput;
use onnx_diagnostic_transformers::{
    BaseModelOutput, CacheLayer, CausalLMOutputWithPast, DynamicCache, EncoderDecoderCache,
    HybridCache, LayerKind, MambaCache, Seq2SeqLMOutput, Seq2SeqModelOutput, SlidingWindowCache,
    StaticCache,
    models::{idefics::IdeficsCausalLMOutputWithPast, sam::SamImageSegmentationOutput},
};

/// Registers, in the calling thread, the serializers of the families switched on until the
/// guard is dropped (the seeds' `register_cache_serialization`); see
/// [`onnx_diagnostic_core::register_cache_serialization`].
pub fn register_cache_serialization(
    patch_transformers: bool,
    patch_diffusers: bool,
    verbose: u8,
) -> SerializationGuard {
    onnx_diagnostic_core::register_cache_serialization(patch_transformers, patch_diffusers, verbose)
}

/// The classes this crate serializes, sorted (what `onnx-diagnostic caches` prints).
pub fn supported_classes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = onnx_diagnostic_core::serialization::available_serializers()
        .into_iter()
        .filter(|s| matches!(s.family(), Family::Transformers | Family::Diffusers))
        .map(|s| s.class_name())
        .collect();
    v.sort_unstable();
    v
}

fn fail(class: &str, reason: String) -> Error {
    Error::Serialization {
        class: class.to_owned(),
        reason,
    }
}

/// The short name of a layer kind in keys (`D`, `W4`, `S`, `X4`). A static sliding layer is
/// named by its slots, `min(window, max_cache_len)`, as the Python package names it (it reads
/// `sliding_window`, which transformers 5's `StaticSlidingWindowLayer` does not keep, then
/// `max_cache_len`); the slots are all the layer's update depends on.
fn layer_tag(kind: LayerKind) -> String {
    match kind {
        LayerKind::Dynamic => "D".to_owned(),
        LayerKind::DynamicSlidingWindow(w) => format!("W{w}"),
        LayerKind::Static(_) => "S".to_owned(),
        LayerKind::StaticSlidingWindow(slots, _) => format!("X{slots}"),
    }
}

/// The layer kind of a tag, `len` being the stored length (the static layers' size).
fn parse_tag(class: &str, tag: &str, len: i64) -> Result<LayerKind> {
    let (letter, rest) = tag.split_at(tag.len().min(1));
    let window = || {
        rest.parse::<i64>()
            .map_err(|_| fail(class, format!("bad sliding window in layer tag {tag:?}")))
    };
    match letter {
        "D" if rest.is_empty() => Ok(LayerKind::Dynamic),
        "W" => Ok(LayerKind::DynamicSlidingWindow(window()?)),
        "S" if rest.is_empty() => Ok(LayerKind::Static(len)),
        "X" => Ok(LayerKind::StaticSlidingWindow(len, window()?)),
        _ => Err(fail(
            class,
            format!("unknown layer tag {tag:?} (expected D, W<n>, S or X<n>)"),
        )),
    }
}

/// The children of a key/value cache; `usual` is the kind whose layers need no tag.
fn flatten_kv(layers: &[CacheLayer], usual: &dyn Fn(LayerKind) -> bool) -> Vec<(String, Value)> {
    let tagged = !layers.iter().all(|l| usual(l.kind()));
    let mut out = Vec::with_capacity(2 * layers.len());
    for (i, l) in layers.iter().enumerate() {
        let tag = if tagged {
            format!("{}_", layer_tag(l.kind()))
        } else {
            String::new()
        };
        let opt = |t: Option<&Tensor>| t.map_or(Value::None, |t| Value::Tensor(t.clone()));
        out.push((format!("key_{tag}{i}"), opt(l.keys())));
        out.push((format!("value_{tag}{i}"), opt(l.values())));
    }
    out
}

/// The layers of a key/value cache from its children; `usual(len)` is the kind of an untagged
/// layer storing `len` positions.
fn unflatten_kv(
    class: &str,
    values: Vec<Value>,
    context: &[String],
    usual: &dyn Fn(i64) -> LayerKind,
) -> Result<Vec<CacheLayer>> {
    if values.len() != context.len() || !values.len().is_multiple_of(2) {
        return Err(fail(
            class,
            format!(
                "{} values for {} keys; expected key/value pairs",
                values.len(),
                context.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(values.len() / 2);
    let mut it = values.into_iter();
    for (i, pair) in context.chunks(2).enumerate() {
        let (k, v) = (it.next(), it.next());
        let parse = |key: &str, prefix: &str| -> Result<Option<String>> {
            let rest = key.strip_prefix(prefix).ok_or_else(|| {
                fail(
                    class,
                    format!("key {key:?} at layer {i}: expected {prefix}..."),
                )
            })?;
            match rest.rsplit_once('_') {
                Some((tag, idx)) if idx == i.to_string() => Ok(Some(tag.to_owned())),
                None if rest == i.to_string() => Ok(None),
                _ => Err(fail(
                    class,
                    format!("key {key:?} is not the one of layer {i}"),
                )),
            }
        };
        let tag = parse(&pair[0], "key_")?;
        if parse(&pair[1], "value_")? != tag {
            return Err(fail(
                class,
                format!("keys {:?} and {:?} disagree", pair[0], pair[1]),
            ));
        }
        let layer = match (k, v) {
            (Some(Value::Tensor(k)), Some(Value::Tensor(v))) => {
                let len = k.size(-2)?.hint();
                let kind = match &tag {
                    Some(t) => parse_tag(class, t, len)?,
                    None => usual(len),
                };
                CacheLayer::filled(kind, k, v).map_err(|e| fail(class, e.to_string()))?
            }
            (Some(Value::None), Some(Value::None)) => match &tag {
                Some(t) => parse_tag(class, t, 0)?.layer(),
                None => usual(0).layer(),
            },
            _ => {
                return Err(fail(
                    class,
                    format!("layer {i}: expected two tensors or two None"),
                ));
            }
        };
        layers.push(layer);
    }
    Ok(layers)
}

/// Serializer of `DynamicCache`.
pub struct DynamicCacheSerializer;

impl Serializer for DynamicCacheSerializer {
    fn class_name(&self) -> &'static str {
        "DynamicCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        let c = downcast::<DynamicCache>(obj, "DynamicCache")?;
        Ok(flatten_kv(&c.layers, &|k| k == LayerKind::Dynamic))
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        let layers = unflatten_kv("DynamicCache", values, context, &|_| LayerKind::Dynamic)?;
        if let Some(l) = layers.iter().find(|l| {
            !matches!(
                l.kind(),
                LayerKind::Dynamic | LayerKind::DynamicSlidingWindow(_)
            )
        }) {
            return Err(fail(
                "DynamicCache",
                format!("a DynamicCache cannot hold a {}", l.kind().class_name()),
            ));
        }
        Ok(Box::new(DynamicCache {
            layers,
            cache_position: None,
        }))
    }
}

fn static_layers(class: &str, values: Vec<Value>, context: &[String]) -> Result<Vec<CacheLayer>> {
    let layers = unflatten_kv(class, values, context, &|len| match class {
        "SlidingWindowCache" => LayerKind::StaticSlidingWindow(len, len),
        _ => LayerKind::Static(len),
    })?;
    if let Some(l) = layers.iter().find(|l| {
        matches!(
            l.kind(),
            LayerKind::Dynamic | LayerKind::DynamicSlidingWindow(_)
        )
    }) {
        return Err(fail(
            class,
            format!("a {class} cannot hold a {}", l.kind().class_name()),
        ));
    }
    Ok(layers)
}

/// Serializer of `StaticCache`.
pub struct StaticCacheSerializer;

impl Serializer for StaticCacheSerializer {
    fn class_name(&self) -> &'static str {
        "StaticCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        let c = downcast::<StaticCache>(obj, "StaticCache")?;
        Ok(flatten_kv(&c.layers, &|k| {
            matches!(k, LayerKind::Static(_))
        }))
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        Ok(Box::new(StaticCache {
            layers: static_layers("StaticCache", values, context)?,
        }))
    }
}

/// Serializer of `SlidingWindowCache`.
pub struct SlidingWindowCacheSerializer;

impl Serializer for SlidingWindowCacheSerializer {
    fn class_name(&self) -> &'static str {
        "SlidingWindowCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        let c = downcast::<SlidingWindowCache>(obj, "SlidingWindowCache")?;
        // Untagged when every layer's window is its stored length (how it is rebuilt).
        Ok(flatten_kv(
            &c.0.layers,
            &|k| matches!(k, LayerKind::StaticSlidingWindow(m, w) if m == w),
        ))
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        Ok(Box::new(SlidingWindowCache(StaticCache {
            layers: static_layers("SlidingWindowCache", values, context)?,
        })))
    }
}

/// Serializer of `HybridCache` (always tagged: its layers are mixed by nature).
pub struct HybridCacheSerializer;

impl Serializer for HybridCacheSerializer {
    fn class_name(&self) -> &'static str {
        "HybridCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        let c = downcast::<HybridCache>(obj, "HybridCache")?;
        Ok(flatten_kv(&c.0.layers, &|_| false))
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        Ok(Box::new(HybridCache(StaticCache {
            layers: static_layers("HybridCache", values, context)?,
        })))
    }
}

/// Serializer of `EncoderDecoderCache`: a dict of its two caches.
pub struct EncoderDecoderCacheSerializer;

impl Serializer for EncoderDecoderCacheSerializer {
    fn class_name(&self) -> &'static str {
        "EncoderDecoderCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        Ok(downcast::<EncoderDecoderCache>(obj, "EncoderDecoderCache")?.fields())
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        let mut out = EncoderDecoderCache::default();
        if values.len() != context.len() {
            return Err(fail(
                "EncoderDecoderCache",
                format!("{} values for {} keys", values.len(), context.len()),
            ));
        }
        for (k, v) in context.iter().zip(values) {
            let cache = v.downcast_ref::<DynamicCache>().cloned().ok_or_else(|| {
                fail(
                    "EncoderDecoderCache",
                    format!("{k} is {}, expected a DynamicCache", v.kind_name()),
                )
            })?;
            match k.as_str() {
                "self_attention_cache" => out.self_attention_cache = cache,
                "cross_attention_cache" => out.cross_attention_cache = cache,
                other => {
                    return Err(fail(
                        "EncoderDecoderCache",
                        format!("unknown child {other:?}"),
                    ));
                }
            }
        }
        Ok(Box::new(out))
    }
}

/// Serializer of `MambaCache`: its two lists of states.
pub struct MambaCacheSerializer;

impl Serializer for MambaCacheSerializer {
    fn class_name(&self) -> &'static str {
        "MambaCache"
    }
    fn family(&self) -> Family {
        Family::Transformers
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        Ok(downcast::<MambaCache>(obj, "MambaCache")?.fields())
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        let mut out = MambaCache::default();
        for (k, v) in context.iter().zip(values) {
            let tensors = match v {
                Value::List(items) => items
                    .into_iter()
                    .map(|x| match x {
                        Value::Tensor(t) => Ok(t),
                        other => Err(fail(
                            "MambaCache",
                            format!("{k} holds {}, expected tensors", other.kind_name()),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?,
                other => {
                    return Err(fail(
                        "MambaCache",
                        format!("{k} is {}, expected a list", other.kind_name()),
                    ));
                }
            };
            match k.as_str() {
                "conv_states" => out.conv_states = tensors,
                "ssm_states" => out.ssm_states = tensors,
                other => return Err(fail("MambaCache", format!("unknown child {other:?}"))),
            }
        }
        Ok(Box::new(out))
    }
}

register_serializer!(DynamicCacheSerializer);
register_serializer!(StaticCacheSerializer);
register_serializer!(SlidingWindowCacheSerializer);
register_serializer!(HybridCacheSerializer);
register_serializer!(EncoderDecoderCacheSerializer);
register_serializer!(MambaCacheSerializer);
register_serializer!(DataclassSerializer::<BaseModelOutput>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<CausalLMOutputWithPast>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<Seq2SeqLMOutput>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<Seq2SeqModelOutput>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<IdeficsCausalLMOutputWithPast>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<SamImageSegmentationOutput>::new(
    Family::Transformers
));
register_serializer!(DataclassSerializer::<UNet2DConditionOutput>::new(
    Family::Diffusers
));
