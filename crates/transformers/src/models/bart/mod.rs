//! Bart, as transformers 5.23 writes it (`models/bart/modeling_bart.py`), and the models on its
//! layers: PLBart (`models/plbart`, the same layers, its own `shift_tokens_right`) and Marian
//! (`models/marian`, sinusoidal positions, no `layernorm_embedding`) and BlenderbotSmall
//! (`models/blenderbot_small`, positions without offset, the decoder's embeddings unscaled and
//! normalised before the positions), configured by [`Family`]:
//!
//! - `BartScaledWordEmbedding` (`shared`, the encoder's and decoder's `embed_tokens`, times
//!   `sqrt(d_model)` with `scale_embedding`), `BartLearnedPositionalEmbedding` (positions + 2)
//!   or `MarianSinusoidalPositionalEmbedding` (computed, not in checkpoints);
//! - `BartAttention`: q/k/v/out projections with biases, the softmax in the scores' type;
//!   self-attention and cross-attention over the encoder's states;
//! - `BartEncoderLayer` / `BartDecoderLayer`: post-norm (`self_attn_layer_norm`,
//!   `encoder_attn_layer_norm`, `final_layer_norm`), `fc1`/`fc2`; the encoder layer keeps
//!   transformers' float16 clamp, a data-dependent test;
//! - `BartForConditionalGeneration`: `lm_head` (tied to `shared`) plus `final_logits_bias`.
//!
//! The cache is an [`EncoderDecoderCache`]: the decoder's self-attention cache grows; the
//! cross-attention one is computed from the encoder's output on the first step and read back
//! afterwards (transformers' `is_updated`: a cross-attention layer that holds states is not
//! recomputed).

mod configuration;

use std::path::Path;

use onnx_diagnostic_core::{
    DynamicShapes, Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope,
};
use tch::Kind;

pub use configuration::{Config, Family};

use crate::{
    cache_utils::{DynamicCache, EncoderDecoderCache, KeyPositions},
    error::{Error, Result, core_error},
    masking_utils::{causal_mask, finfo_min},
    modeling_attention::split_heads,
    modeling_outputs::{BaseModelOutput, Seq2SeqLMOutput},
    nn::{Activation, Embedding, LayerNorm, Linear},
    tasks::{
        TextGenerationOptions,
        text2text_generation::{
            text2text_generation_dynamic_shapes, text2text_generation_inputs,
            text2text_generation_prompt, text2text_input_sets,
        },
    },
    weights::{Init, VarBuilder, Weights},
};

/// `nn.LayerNorm`'s default epsilon, which Bart's layers keep.
const LAYER_NORM_EPS: f64 = 1e-5;

/// `BartAttention`.
#[derive(Clone, Debug)]
pub struct BartAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
    head_dim: i64,
    layer: usize,
}

impl BartAttention {
    fn load(vb: &VarBuilder<'_>, d: i64, heads: i64, layer: usize) -> Result<Self> {
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", d, d, true)?,
            k_proj: Linear::load(vb, "k_proj", d, d, true)?,
            v_proj: Linear::load(vb, "v_proj", d, d, true)?,
            out_proj: Linear::load(vb, "out_proj", d, d, true)?,
            heads,
            head_dim: d / heads,
            layer,
        })
    }

    fn keys_values(&self, states: &Tensor) -> CoreResult<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.k_proj.forward(states)?, self.heads, self.head_dim)?,
            split_heads(&self.v_proj.forward(states)?, self.heads, self.head_dim)?,
        ))
    }

    /// Attention of `x` over `keys`/`values`: Bart's `eager_attention_forward`, the softmax
    /// in the scores' type.
    fn attend(
        &self,
        x: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        let q = split_heads(&self.q_proj.forward(x)?, self.heads, self.head_dim)?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        let mut w = q.matmul(&keys.transpose(2, 3)?)?.mul_scalar(scaling)?;
        if let Some(m) = mask {
            w = w.add(m)?;
        }
        let out = w
            .softmax(-1)?
            .matmul(values)?
            .transpose(1, 2)?
            .contiguous()?;
        let out = out.reshape(vec![x.size(0)?, x.size(1)?, SymInt::new(-1)])?;
        self.out_proj.forward(&out)
    }

    /// Self-attention; the decoder's states are appended to `cache`.
    fn forward_self(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut DynamicCache>,
    ) -> CoreResult<Tensor> {
        let (k, v) = self.keys_values(x)?;
        let (k, v) = match cache {
            Some(c) => c
                .update(&k, &v, self.layer)
                .map_err(|e| core_error("BartAttention", e))?,
            None => (k, v),
        };
        self.attend(x, &k, &v, mask)
    }

    /// Cross-attention over the encoder's states: the keys and values come from the
    /// cross-attention cache when its layer holds them (`is_updated`), else from `encoder`,
    /// and are stored there.
    fn forward_cross(
        &self,
        x: &Tensor,
        encoder: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let held = cache
            .layers
            .get(self.layer)
            .and_then(|l| Some((l.keys()?.clone(), l.values()?.clone())));
        let (k, v) = match held {
            Some(kv) => kv,
            None => {
                let (k, v) = self.keys_values(encoder)?;
                cache
                    .update(&k, &v, self.layer)
                    .map_err(|e| core_error("BartAttention", e))?
            }
        };
        self.attend(x, &k, &v, mask)
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Clone, Debug)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl FeedForward {
    fn load(vb: &VarBuilder<'_>, d: i64, ffn: i64, act: Activation) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(vb, "fc1", d, ffn, true)?,
            fc2: Linear::load(vb, "fc2", ffn, d, true)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

/// `BartEncoderLayer`.
#[derive(Clone, Debug)]
pub struct BartEncoderLayer {
    self_attn: BartAttention,
    self_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl BartEncoderLayer {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: BartAttention::load(
                &vb.pp("self_attn"),
                d,
                cfg.encoder_attention_heads,
                layer,
            )?,
            self_attn_layer_norm: LayerNorm::load(vb, "self_attn_layer_norm", d, LAYER_NORM_EPS)?,
            ffn: FeedForward::load(vb, d, cfg.encoder_ffn_dim, cfg.activation()?)?,
            final_layer_norm: LayerNorm::load(vb, "final_layer_norm", d, LAYER_NORM_EPS)?,
        })
    }
}

#[onnx_diagnostic_macros::rewritable(forward, or_into_bitor)]
impl BartEncoderLayer {
    /// The layer, then transformers' float16 clamp: `if hidden_states.dtype == torch.float16
    /// and (torch.isinf(hidden_states).any() or torch.isnan(hidden_states).any())` (the form of
    /// transformers 4 the seeds rewrite; 5.23's `not torch.isfinite(hidden_states).all()` is
    /// the same test), a test on the data that an export cannot take as it is (the seeds
    /// rewrite it into `torch.cond`).
    ///
    /// # Errors
    /// Any error of the ops; [`onnx_diagnostic_core::Error::DataDependent`] during an export
    /// in float16.
    pub fn forward(&self, input: &Tensor, mask: Option<&Tensor>) -> CoreResult<Tensor> {
        let x = {
            let _s = scope("self_attn");
            self.self_attn.forward_self(input, mask, None)?
        };
        let h = input.add(&x)?;
        let h = {
            let _s = scope("self_attn_layer_norm");
            self.self_attn_layer_norm.forward(&h)?
        };
        let x = self.ffn.forward(&h)?;
        let h = h.add(&x)?;
        let mut h = {
            let _s = scope("final_layer_norm");
            self.final_layer_norm.forward(&h)?
        };
        if h.kind() == Kind::Half
            && (h.isinf()?.any(&[], false)?.to_bool()? || h.isnan()?.any(&[], false)?.to_bool()?)
        {
            let clamp_value = -finfo_min(Kind::Half) - 1000.0;
            h = h.clamp(Some(-clamp_value), Some(clamp_value))?;
        }
        Ok(h)
    }
}

/// `BartDecoderLayer`.
#[derive(Clone, Debug)]
pub struct BartDecoderLayer {
    self_attn: BartAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: BartAttention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl BartDecoderLayer {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (d, heads) = (cfg.d_model, cfg.decoder_attention_heads);
        Ok(Self {
            self_attn: BartAttention::load(&vb.pp("self_attn"), d, heads, layer)?,
            self_attn_layer_norm: LayerNorm::load(vb, "self_attn_layer_norm", d, LAYER_NORM_EPS)?,
            encoder_attn: BartAttention::load(&vb.pp("encoder_attn"), d, heads, layer)?,
            encoder_attn_layer_norm: LayerNorm::load(
                vb,
                "encoder_attn_layer_norm",
                d,
                LAYER_NORM_EPS,
            )?,
            ffn: FeedForward::load(vb, d, cfg.decoder_ffn_dim, cfg.activation()?)?,
            final_layer_norm: LayerNorm::load(vb, "final_layer_norm", d, LAYER_NORM_EPS)?,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        mask: &Tensor,
        encoder: &Tensor,
        encoder_mask: Option<&Tensor>,
        cache: &mut EncoderDecoderCache,
    ) -> CoreResult<Tensor> {
        let x = {
            let _s = scope("self_attn");
            self.self_attn
                .forward_self(h, Some(mask), Some(&mut cache.self_attention_cache))?
        };
        let h = self.self_attn_layer_norm.forward(&h.add(&x)?)?;
        let x = {
            let _s = scope("encoder_attn");
            self.encoder_attn.forward_cross(
                &h,
                encoder,
                encoder_mask,
                &mut cache.cross_attention_cache,
            )?
        };
        let h = self.encoder_attn_layer_norm.forward(&h.add(&x)?)?;
        let x = self.ffn.forward(&h)?;
        self.final_layer_norm.forward(&h.add(&x)?)
    }
}

/// The positions: learned with an offset (Bart's 2, BlenderbotSmall's 0), or Marian's
/// sinusoidal table.
#[derive(Clone, Debug)]
enum Positions {
    Learned(Tensor, i64),
    Sinusoidal(Tensor),
}

impl Positions {
    fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let (n, d) = (cfg.max_position_embeddings, cfg.d_model);
        Ok(match cfg.family {
            Family::Marian => Positions::Sinusoidal(sinusoidal_table(n, d, vb)?),
            Family::BlenderbotSmall => Positions::Learned(
                vb.pp("embed_positions")
                    .get("weight", &[n, d], Init::Normal)?,
                0,
            ),
            _ => Positions::Learned(
                vb.pp("embed_positions")
                    .get("weight", &[n + 2, d], Init::Normal)?,
                2,
            ),
        })
    }

    /// The embeddings of positions `past..past + seq`, `[seq, d]`.
    fn forward(&self, past: &SymInt, seq: &SymInt, device: tch::Device) -> CoreResult<Tensor> {
        let (table, offset) = match self {
            Positions::Learned(t, offset) => (t, *offset),
            Positions::Sinusoidal(t) => (t, 0),
        };
        let ids = Tensor::arange(past + offset, past + seq + offset, 1, Kind::Int64, device)?;
        Tensor::embedding(table, &ids)
    }
}

/// `MarianSinusoidalPositionalEmbedding.create_weight`: `pos / 10000^(2 * (j // 2) / dim)` in
/// float64, the sines of the even columns then the cosines of the odd ones, as float32, then in
/// the model's type.
fn sinusoidal_table(n: i64, d: i64, vb: &VarBuilder<'_>) -> Result<Tensor> {
    let sentinel = if d % 2 == 0 { d / 2 } else { d / 2 + 1 };
    let mut data = vec![0f32; (n * d) as usize];
    for pos in 0..n {
        let angle = |j: i64| pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d as f64);
        let row = &mut data[(pos * d) as usize..((pos + 1) * d) as usize];
        for (c, j) in (0..d).step_by(2).enumerate() {
            row[c] = angle(j).sin() as f32;
        }
        for (c, j) in (1..d).step_by(2).enumerate() {
            row[sentinel as usize + c] = angle(j).cos() as f32;
        }
    }
    let t = tch::Tensor::from_slice(&data)
        .reshape([n, d])
        .to_kind(vb.dtype())
        .to_device(vb.device());
    Ok(Tensor::from(t))
}

/// `BartForConditionalGeneration` (PLBart's and Marian's generation models by their
/// [`Family`]).
#[derive(Clone, Debug)]
pub struct BartForConditionalGeneration {
    /// The configuration.
    pub config: Config,
    shared: Embedding,
    embed_scale: f64,
    encoder_positions: Positions,
    encoder_layernorm_embedding: Option<LayerNorm>,
    encoder_layers: Vec<BartEncoderLayer>,
    decoder_positions: Positions,
    decoder_layernorm_embedding: Option<LayerNorm>,
    decoder_layers: Vec<BartDecoderLayer>,
    lm_head: Tensor,
    final_logits_bias: Tensor,
    params: Vec<(String, Tensor)>,
}

impl BartForConditionalGeneration {
    /// Builds the model from a config and weights.
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::UnusedWeights`] for
    /// checkpoint tensors no module reads.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let vb = weights.root();
        let m = vb.pp("model");
        let (v, d) = (config.vocab_size, config.d_model);
        let shared = Embedding::load(&m, "shared", v, d, config.pad_token_id)?;
        // Older checkpoints also save the tied copies; transformers ties them to `shared`.
        weights.ignore_unread("encoder.embed_tokens.weight");
        weights.ignore_unread("decoder.embed_tokens.weight");
        let enc = m.pp("encoder");
        let dec = m.pp("decoder");
        let layernorm = |vb: &VarBuilder<'_>| -> Result<Option<LayerNorm>> {
            match config.family {
                Family::Marian => Ok(None),
                _ => Ok(Some(LayerNorm::load(
                    vb,
                    "layernorm_embedding",
                    d,
                    LAYER_NORM_EPS,
                )?)),
            }
        };
        if config.family == Family::Marian {
            // The sinusoidal tables are computed; older checkpoints saved them.
            weights.ignore_unread("embed_positions.weight");
        }
        let encoder_positions = Positions::load(&enc, &config)?;
        let encoder_layernorm_embedding = layernorm(&enc)?;
        let encoder_layers = (0..config.encoder_layers)
            .map(|i| BartEncoderLayer::load(&enc.pp(format!("layers.{i}")), &config, i))
            .collect::<Result<_>>()?;
        let decoder_positions = Positions::load(&dec, &config)?;
        let decoder_layernorm_embedding = layernorm(&dec)?;
        let decoder_layers = (0..config.decoder_layers)
            .map(|i| BartDecoderLayer::load(&dec.pp(format!("layers.{i}")), &config, i))
            .collect::<Result<_>>()?;
        let lm_head = if config.tie_word_embeddings {
            weights.ignore_unread("lm_head.weight");
            shared.weight().clone()
        } else {
            vb.pp("lm_head")
                .get("weight", &[config.decoder_vocab(), d], Init::Normal)?
        };
        // `_keys_to_ignore_on_load_missing = ["final_logits_bias"]`: zeros when absent.
        let final_logits_bias = if vb.contains("final_logits_bias") {
            vb.get(
                "final_logits_bias",
                &[1, config.decoder_vocab()],
                Init::Zeros,
            )?
        } else {
            Tensor::from(tch::Tensor::zeros(
                [1, config.decoder_vocab()],
                (vb.dtype(), vb.device()),
            ))
        };
        let params = weights.finish()?;
        let embed_scale = if config.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        };
        Ok(Self {
            config,
            shared,
            embed_scale,
            encoder_positions,
            encoder_layernorm_embedding,
            encoder_layers,
            decoder_positions,
            decoder_layernorm_embedding,
            decoder_layers,
            lm_head,
            final_logits_bias,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and
    /// [`BartForConditionalGeneration::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.family.class_name())?;
        Self::new(config, &mut weights)
    }

    fn model(&self) -> &'static str {
        self.config.family.class_name()
    }

    /// The token embeddings times the scale (`BartScaledWordEmbedding`).
    fn embed(&self, ids: &Tensor) -> CoreResult<Tensor> {
        let h = self.shared.forward(ids)?;
        if self.embed_scale == 1.0 {
            Ok(h)
        } else {
            h.mul_scalar(self.embed_scale)
        }
    }

    /// `BartEncoder`: the encoder's last hidden state `[batch, source, d_model]`.
    ///
    /// # Errors
    /// Any error of the ops (the float16 clamp's test during an export).
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        let _s = scope("model.encoder");
        let h = self.embed(input_ids)?;
        let pos = self.encoder_positions.forward(
            &SymInt::new(0),
            &input_ids.size(1)?,
            input_ids.device(),
        )?;
        let mut h = h.add(&pos)?;
        if let Some(n) = &self.encoder_layernorm_embedding {
            h = n.forward(&h)?;
        }
        let mask = match attention_mask {
            Some(m) => Some(padding_mask(m, h.kind())?),
            None => None,
        };
        for (i, layer) in self.encoder_layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h, mask.as_ref())?;
        }
        Ok(h)
    }

    /// `BartDecoder` and the head: the logits `[batch, target, vocab]` of `decoder_input_ids`
    /// after the positions `cache` holds, given the encoder's states; `cache` grows.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        encoder: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut EncoderDecoderCache,
    ) -> CoreResult<Tensor> {
        let s = scope("model.decoder");
        let q = decoder_input_ids.size(1)?;
        let past = cache
            .self_attention_cache
            .get_seq_length()
            .map_err(|e| core_error(self.model(), e))?;
        let pos = self
            .decoder_positions
            .forward(&past, &q, decoder_input_ids.device())?;
        let mut h = if self.config.family == Family::BlenderbotSmall {
            // BlenderbotSmallDecoder: the embeddings unscaled, normalised, then the positions.
            let e = self.shared.forward(decoder_input_ids)?;
            match &self.decoder_layernorm_embedding {
                Some(n) => n.forward(&e)?,
                None => e,
            }
            .add(&pos)?
        } else {
            let mut h = self.embed(decoder_input_ids)?.add(&pos)?;
            if let Some(n) = &self.decoder_layernorm_embedding {
                h = n.forward(&h)?;
            }
            h
        };
        let total = &past + &q;
        let cache_position = Tensor::arange(
            past.clone(),
            total.clone(),
            1,
            Kind::Int64,
            decoder_input_ids.device(),
        )?;
        let mask = causal_mask(
            decoder_attention_mask,
            &cache_position,
            &KeyPositions::Range {
                offset: SymInt::new(0),
                length: total,
            },
            None,
            h.kind(),
        )?;
        let encoder_mask = match attention_mask {
            Some(m) => Some(padding_mask(m, h.kind())?),
            None => None,
        };
        for (i, layer) in self.decoder_layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h, &mask, encoder, encoder_mask.as_ref(), cache)?;
        }
        drop(s);
        let _s = scope("lm_head");
        h.linear(&self.lm_head, None)?.add(&self.final_logits_bias)
    }

    /// The logits and the grown cache for `decoder_input_ids` (the encoder runs on
    /// `input_ids` unless `encoder_outputs` gives its states); the encoder's states.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        decoder_input_ids: &Tensor,
        encoder_outputs: Option<&Tensor>,
        cache: Option<EncoderDecoderCache>,
    ) -> CoreResult<(Tensor, EncoderDecoderCache, Tensor)> {
        let encoder = match encoder_outputs {
            Some(e) => e.clone(),
            None => self.encode(input_ids, attention_mask)?,
        };
        let mut cache = cache.unwrap_or_default();
        let logits = self.decode(
            decoder_input_ids,
            None,
            &encoder,
            attention_mask,
            &mut cache,
        )?;
        Ok((logits, cache, encoder))
    }

    /// `shift_tokens_right`: the decoder's inputs for `labels`, the tokens moved right by one
    /// after `decoder_start_token_id` (PLBart: after the last non-padding token, its language
    /// id), `-100` replaced by the padding token.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn shift_tokens_right(&self, labels: &Tensor) -> CoreResult<Tensor> {
        let pad = self.config.pad_token_id.unwrap_or(0);
        let ids = labels.masked_fill(&labels.eq_scalar(-100)?, pad)?;
        let start = match (self.config.family, self.config.decoder_start_token_id) {
            (Family::PLBart, _) | (_, None) => {
                let last = ids
                    .ne_scalar(pad)?
                    .to_kind(Kind::Int64)?
                    .sum(&[1], false)?
                    .sub_scalar(1)?;
                ids.gather(1, &last.unsqueeze(-1)?)?
            }
            (_, Some(s)) => Tensor::full(
                vec![labels.size(0)?, SymInt::new(1)],
                s,
                Kind::Int64,
                labels.device(),
            )?,
        };
        let n = labels.size(1)?;
        let rest = ids.narrow(1, 0, &n - 1)?;
        Tensor::cat(&[&start, &rest], 1)
    }
}

impl crate::auto::TaskModel for BartForConditionalGeneration {
    fn task(&self) -> &'static str {
        "text2text-generation"
    }

    fn input_sets(
        &self,
        options: &TextGenerationOptions,
        increment: i64,
    ) -> Result<crate::auto::InputSets> {
        let dims = self.config.seq2seq_dims();
        text2text_input_sets(options, increment)?
            .into_iter()
            .map(|(name, (b, s, q, p))| {
                tch::manual_seed(0);
                Ok((name, text2text_generation_inputs(&dims, b, s, q, p)?))
            })
            .collect()
    }

    fn dynamic_shapes(&self, _options: &TextGenerationOptions) -> DynamicShapes {
        text2text_generation_dynamic_shapes(&self.config.seq2seq_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        tch::manual_seed(0);
        text2text_generation_prompt(&self.config.seq2seq_dims())
    }
}

/// `PLBartEncoderLayer`: Bart's encoder layer (its code, float16 clamp included).
pub type PLBartEncoderLayer = BartEncoderLayer;

/// `MarianEncoderLayer`: Bart's encoder layer.
pub type MarianEncoderLayer = BartEncoderLayer;

/// The transformers classes whose code is another struct's here, with that struct: a
/// rewriting or patch the seeds name on the class applies to the struct
/// (`PLBartEncoderLayer.forward` is `BartEncoderLayer.forward`).
pub fn shared_classes() -> &'static [(&'static str, &'static str)] {
    &[
        ("PLBartEncoderLayer", "BartEncoderLayer"),
        ("MarianEncoderLayer", "BartEncoderLayer"),
        ("BlenderbotSmallEncoderLayer", "BartEncoderLayer"),
    ]
}

/// `PLBartForConditionalGeneration`: [`BartForConditionalGeneration`] on a `plbart` config.
pub type PLBartForConditionalGeneration = BartForConditionalGeneration;

/// `MarianMTModel`: [`BartForConditionalGeneration`] on a `marian` config.
pub type MarianMTModel = BartForConditionalGeneration;

/// `BlenderbotSmallForConditionalGeneration`: [`BartForConditionalGeneration`] on a
/// `blenderbot-small` config.
pub type BlenderbotSmallForConditionalGeneration = BartForConditionalGeneration;

/// `BlenderbotSmallEncoderLayer`: Bart's encoder layer.
pub type BlenderbotSmallEncoderLayer = BartEncoderLayer;

/// The bidirectional padding mask `[batch, 1, 1, kv]` of a 2-D attention mask: 0 where it
/// keeps a position, the type's minimum elsewhere (`create_bidirectional_mask` for eager
/// attention; its query dimension broadcasts).
fn padding_mask(attention_mask: &Tensor, kind: Kind) -> CoreResult<Tensor> {
    attention_mask
        .to_kind(Kind::Bool)?
        .logical_not()?
        .unsqueeze(1)?
        .unsqueeze(1)?
        .to_kind(kind)?
        .mul_scalar(finfo_min(kind))
}

impl Module for BartForConditionalGeneration {
    fn class_name(&self) -> String {
        self.model().to_owned()
    }

    /// transformers' `BartForConditionalGeneration.forward`, its first arguments.
    fn forward_signature(&self) -> Vec<String> {
        [
            "input_ids",
            "attention_mask",
            "decoder_input_ids",
            "decoder_attention_mask",
            "encoder_outputs",
            "past_key_values",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    /// `Seq2SeqLMOutput` with `logits`, `past_key_values` (an `EncoderDecoderCache`) and
    /// `encoder_last_hidden_state`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let model = self.model();
        let encoder_outputs = match inputs.get("encoder_outputs") {
            Value::None => None,
            Value::Tensor(t) => Some(t.clone()),
            v => match v.downcast_ref::<BaseModelOutput>() {
                Some(o) => match &o.last_hidden_state {
                    Some(Value::Tensor(t)) => Some(t.clone()),
                    _ => None,
                },
                None => {
                    return Err(core_error(
                        model,
                        Error::Core(onnx_diagnostic_core::Error::Input {
                            path: "encoder_outputs".to_owned(),
                            reason: format!(
                                "expected a BaseModelOutput or a tensor, got {}",
                                v.kind_name()
                            ),
                        }),
                    ));
                }
            },
        };
        let cache = match inputs.get("past_key_values") {
            Value::None => None,
            v => Some(
                v.downcast_ref::<EncoderDecoderCache>()
                    .cloned()
                    .ok_or_else(|| {
                        core_error(
                            model,
                            Error::Core(onnx_diagnostic_core::Error::Input {
                                path: "past_key_values".to_owned(),
                                reason: format!(
                                    "expected an EncoderDecoderCache or None, got {}",
                                    v.kind_name()
                                ),
                            }),
                        )
                    })?,
            ),
        };
        let input_ids = inputs.opt_tensor("input_ids")?;
        let attention_mask = inputs.opt_tensor("attention_mask")?;
        let decoder_attention_mask = inputs.opt_tensor("decoder_attention_mask")?;
        let encoder = match (encoder_outputs, input_ids) {
            (Some(e), _) => e,
            (None, Some(ids)) => self.encode(ids, attention_mask)?,
            (None, None) => {
                return Err(core_error(
                    model,
                    Error::Core(onnx_diagnostic_core::Error::Input {
                        path: "input_ids".to_owned(),
                        reason: "give input_ids or encoder_outputs".to_owned(),
                    }),
                ));
            }
        };
        let decoder_input_ids = match inputs.opt_tensor("decoder_input_ids")? {
            Some(d) => d.clone(),
            None => match input_ids {
                Some(ids) => self.shift_tokens_right(ids)?,
                None => {
                    return Err(core_error(
                        model,
                        Error::Core(onnx_diagnostic_core::Error::Input {
                            path: "decoder_input_ids".to_owned(),
                            reason: "give decoder_input_ids (or input_ids to shift)".to_owned(),
                        }),
                    ));
                }
            },
        };
        let mut cache = cache.unwrap_or_default();
        let logits = self.decode(
            &decoder_input_ids,
            decoder_attention_mask,
            &encoder,
            attention_mask,
            &mut cache,
        )?;
        Ok(Value::custom(Seq2SeqLMOutput {
            logits: Some(Value::Tensor(logits)),
            past_key_values: Some(Value::custom(cache)),
            encoder_last_hidden_state: Some(Value::Tensor(encoder)),
            ..Seq2SeqLMOutput::default()
        }))
    }
}
