//! Idefics' perceiver resampler, as transformers 5.23 writes it (`models/idefics/perceiver.py`,
//! `IdeficsPerceiverResampler`): `resampler_n_latents` learned latents attend to the image
//! features and themselves (`resampler_depth` blocks of attention and MLP, each with a
//! residual), then a LayerNorm: every image becomes `n_latents` features of `embed_dim`.
//!
//! Weights under `model.perceiver_resampler.`: `latents`, `blocks.{i}.0.{context_layer_norm,
//! latents_layer_norm, q_proj, k_proj, v_proj, output_proj}` (and `q_layer_norm`,
//! `k_layer_norm` with `qk_layer_norms_perceiver`), `blocks.{i}.1.{ln, fc, c_proj}`,
//! `layer_norm`. The LayerNorms have torch's default epsilon (1e-5); the attention's softmax
//! is in the features' type, after subtracting each row's maximum, as transformers writes it.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};

use super::configuration::IdeficsConfig;
use crate::{
    error::Result,
    nn::{LayerNorm, Linear},
    weights::{Init, VarBuilder},
};

/// `nn.LayerNorm`'s default epsilon.
const EPS: f64 = 1e-5;

/// `IdeficsPerceiverAttention`.
#[derive(Clone, Debug)]
struct IdeficsPerceiverAttention {
    context_layer_norm: LayerNorm,
    latents_layer_norm: LayerNorm,
    qk_layer_norms: Option<(LayerNorm, LayerNorm)>,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    output_proj: Linear,
    heads: i64,
    head_dim: i64,
}

impl IdeficsPerceiverAttention {
    fn load(vb: &VarBuilder<'_>, e: i64, heads: i64, head_dim: i64, qk: bool) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            context_layer_norm: LayerNorm::load(vb, "context_layer_norm", e, EPS)?,
            latents_layer_norm: LayerNorm::load(vb, "latents_layer_norm", e, EPS)?,
            qk_layer_norms: if qk {
                Some((
                    LayerNorm::load(vb, "q_layer_norm", head_dim, EPS)?,
                    LayerNorm::load(vb, "k_layer_norm", head_dim, EPS)?,
                ))
            } else {
                None
            },
            q_proj: Linear::load(vb, "q_proj", e, inner, false)?,
            k_proj: Linear::load(vb, "k_proj", e, inner, false)?,
            v_proj: Linear::load(vb, "v_proj", e, inner, false)?,
            output_proj: Linear::load(vb, "output_proj", inner, e, false)?,
            heads,
            head_dim,
        })
    }

    fn forward(&self, context: &Tensor, latents: &Tensor) -> CoreResult<Tensor> {
        let context = self.context_layer_norm.forward(context)?;
        let latents = self.latents_layer_norm.forward(latents)?;
        let both = Tensor::cat(&[&context, &latents], -2)?;
        let b = context.size(0)?;
        let heads = |x: Tensor| {
            let n = x.size(1)?;
            x.reshape(vec![
                b.clone(),
                n,
                SymInt::new(self.heads),
                SymInt::new(self.head_dim),
            ])?
            .transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(&latents)?)?;
        let k = heads(self.k_proj.forward(&both)?)?;
        let v = heads(self.v_proj.forward(&both)?)?;
        let (q, k) = match &self.qk_layer_norms {
            Some((qn, kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            None => (q, k),
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let scores = q.mul_scalar(scale)?.matmul(&k.transpose(-2, -1)?)?;
        let stabilized = scores.sub(&scores.amax(&[-1], true)?)?;
        let attn = stabilized.softmax(-1)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.flatten(-2, -1)?;
        self.output_proj.forward(&out)
    }
}

/// The perceiver's `IdeficsMLP`: LayerNorm, `fc`, ReLU, `c_proj` (no biases).
#[derive(Clone, Debug)]
struct IdeficsPerceiverMLP {
    ln: LayerNorm,
    fc: Linear,
    c_proj: Linear,
}

impl IdeficsPerceiverMLP {
    fn load(vb: &VarBuilder<'_>, e: i64, inner: i64) -> Result<Self> {
        Ok(Self {
            ln: LayerNorm::load(vb, "ln", e, EPS)?,
            fc: Linear::load(vb, "fc", e, inner, false)?,
            c_proj: Linear::load(vb, "c_proj", inner, e, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        self.c_proj
            .forward(&self.fc.forward(&self.ln.forward(x)?)?.relu()?)
    }
}

/// `IdeficsPerceiverResampler`.
#[derive(Clone, Debug)]
pub struct IdeficsPerceiverResampler {
    latents: Tensor,
    blocks: Vec<(IdeficsPerceiverAttention, IdeficsPerceiverMLP)>,
    layer_norm: LayerNorm,
}

impl IdeficsPerceiverResampler {
    /// Reads the resampler under `vb` (`model.perceiver_resampler`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, c: &IdeficsConfig) -> Result<Self> {
        let p = &c.perceiver_config;
        let e = c.vision_config.embed_dim;
        // transformers' `_init_weights`: `init.normal_(latents)` (std 1).
        let latents = vb.get("latents", &[p.resampler_n_latents, e], Init::NormalStd(1.0))?;
        let blocks = (0..p.resampler_depth)
            .map(|i| {
                let b = vb.pp(format!("blocks.{i}"));
                Ok((
                    IdeficsPerceiverAttention::load(
                        &b.pp("0"),
                        e,
                        p.resampler_n_heads,
                        p.resampler_head_dim,
                        p.qk_layer_norms_perceiver,
                    )?,
                    IdeficsPerceiverMLP::load(&b.pp("1"), e, 4 * e)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            latents,
            blocks,
            layer_norm: LayerNorm::load(vb, "layer_norm", e, EPS)?,
        })
    }

    /// `[n, n_latents, embed_dim]` from the image features `[n, tokens, embed_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, context: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("perceiver_resampler");
        let s = self.latents.concrete_shape();
        let mut latents = self.latents.unsqueeze(0)?.expand(vec![
            context.size(0)?,
            SymInt::new(s[0]),
            SymInt::new(s[1]),
        ])?;
        for (i, (attn, ff)) in self.blocks.iter().enumerate() {
            let _b = scope(&format!("blocks.{i}"));
            latents = attn.forward(context, &latents)?.add(&latents)?;
            latents = ff.forward(&latents)?.add(&latents)?;
        }
        self.layer_norm.forward(&latents)
    }
}
