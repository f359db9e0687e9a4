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
//! - `BartModel` (`model.rs`): the encoder and the decoder, the decoder's last hidden state out;
//! - `BartForConditionalGeneration` (`conditional_generation.rs`): `lm_head` (tied to
//!   `shared`) plus `final_logits_bias`.
//!
//! The cache is an [`EncoderDecoderCache`]: the decoder's self-attention cache grows; the
//! cross-attention one is computed from the encoder's output on the first step and read back
//! afterwards (transformers' `is_updated`: a cross-attention layer that holds states is not
//! recomputed).

mod conditional_generation;
mod configuration;
mod model;

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use tch::Kind;

pub use conditional_generation::BartForConditionalGeneration;
pub use configuration::{Config, Family};
pub use model::BartModel;

use crate::{
    cache_utils::{DynamicCache, EncoderDecoderCache},
    error::{Result, core_error},
    masking_utils::finfo_min,
    modeling_attention::split_heads,
    nn::{Activation, LayerNorm, Linear},
    weights::{Init, VarBuilder},
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
