//! The attention blocks of diffusers' `models/attention.py` and
//! `models/attention_processor.py` as the UNets use them: `Attention` run by
//! `AttnProcessor2_0` (diffusers' default processor: `scaled_dot_product_attention`, no mask),
//! the `GEGLU` feed-forward and `BasicTransformerBlock` with `layer_norm` norms (self-attention,
//! cross-attention, feed-forward, each residual).

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use onnx_diagnostic_transformers::{
    Result,
    nn::{LayerNorm, Linear},
    weights::VarBuilder,
};

/// `Attention(query_dim, cross_attention_dim, heads, dim_head, bias=False, out_bias=True)`:
/// `to_q`, `to_k`, `to_v` and `to_out.0`.
#[derive(Clone, Debug)]
pub struct Attention {
    name: String,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
}

impl Attention {
    /// Loads `name` (`attn1`) under `vb`; `kv_dim` is the width of the keys' source
    /// (`cross_attention_dim`, or `query_dim` for self-attention).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        (query_dim, kv_dim): (i64, i64),
        (heads, dim_head): (i64, i64),
        bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let vb = vb.pp(name);
        Ok(Self {
            name: name.to_owned(),
            to_q: Linear::load_torch_default(&vb, "to_q", query_dim, inner, bias)?,
            to_k: Linear::load_torch_default(&vb, "to_k", kv_dim, inner, bias)?,
            to_v: Linear::load_torch_default(&vb, "to_v", kv_dim, inner, bias)?,
            to_out: Linear::load_torch_default(&vb, "to_out.0", inner, query_dim, true)?,
            heads,
        })
    }

    /// `AttnProcessor2_0.__call__` on `hidden_states` `[batch, tokens, query_dim]`, the keys and
    /// values from `encoder_hidden_states` (self-attention when `None`).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        let batch = hidden_states.size(0)?;
        let query = self.to_q.forward(hidden_states)?;
        let source = encoder_hidden_states.unwrap_or(hidden_states);
        let key = self.to_k.forward(source)?;
        let value = self.to_v.forward(source)?;
        let inner = key.size(-1)?;
        let head_dim = inner.floor_div(self.heads);
        let split = |t: &Tensor| {
            t.reshape(vec![
                batch.clone(),
                SymInt::new(-1),
                SymInt::new(self.heads),
                head_dim.clone(),
            ])?
            .transpose(1, 2)
        };
        let h = Tensor::scaled_dot_product_attention(
            &split(&query)?,
            &split(&key)?,
            &split(&value)?,
            None,
            false,
            None,
            false,
        )?;
        let h = h
            .transpose(1, 2)?
            .reshape(vec![batch, SymInt::new(-1), &head_dim * self.heads])?;
        // to_out[1] is a dropout; rescale_output_factor is 1.
        self.to_out.forward(&h)?.div_scalar(1.0)
    }
}

/// `FeedForward(dim, activation_fn="geglu")`: `net.0` (`GEGLU`: a projection to twice the
/// inner width, halves `h * gelu(gate)`), `net.2` back to `dim`.
#[derive(Clone, Debug)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    /// Loads `ff` under `vb`, of inner width `4 * dim`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, dim: i64) -> Result<Self> {
        let vb = vb.pp("ff");
        let inner = 4 * dim;
        Ok(Self {
            proj: Linear::load_torch_default(&vb, "net.0.proj", dim, 2 * inner, true)?,
            out: Linear::load_torch_default(&vb, "net.2", inner, dim, true)?,
        })
    }

    /// The feed-forward.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("ff");
        let halves = self.proj.forward(x)?.chunk(2, -1)?;
        let h = halves[0].mul(&halves[1].gelu("none")?)?;
        self.out.forward(&h)
    }
}

/// `BasicTransformerBlock(dim, heads, head_dim, cross_attention_dim, norm_type="layer_norm")`.
#[derive(Clone, Debug)]
pub struct BasicTransformerBlock {
    name: String,
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

/// The sizes of a [`BasicTransformerBlock`].
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    /// The width of the hidden states (`inner_dim` of the `Transformer2DModel`).
    pub dim: i64,
    /// `num_attention_heads`.
    pub heads: i64,
    /// `attention_head_dim`.
    pub head_dim: i64,
    /// `cross_attention_dim`.
    pub cross_attention_dim: i64,
    /// `only_cross_attention`: `attn1` attends to the encoder's states too.
    pub only_cross_attention: bool,
    /// `norm_eps`.
    pub eps: f64,
}

impl BasicTransformerBlock {
    /// Loads `name` (`transformer_blocks.0`) under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, name: &str, d: BlockDims) -> Result<Self> {
        let vb = vb.pp(name);
        let kv1 = if d.only_cross_attention {
            d.cross_attention_dim
        } else {
            d.dim
        };
        let heads = (d.heads, d.head_dim);
        Ok(Self {
            name: name.to_owned(),
            norm1: LayerNorm::load(&vb, "norm1", d.dim, d.eps)?,
            attn1: Attention::load(&vb, "attn1", (d.dim, kv1), heads, false)?,
            norm2: LayerNorm::load(&vb, "norm2", d.dim, d.eps)?,
            attn2: Attention::load(&vb, "attn2", (d.dim, d.cross_attention_dim), heads, false)?,
            norm3: LayerNorm::load(&vb, "norm3", d.dim, d.eps)?,
            ff: FeedForward::load(&vb, d.dim)?,
            only_cross_attention: d.only_cross_attention,
        })
    }

    /// The block on `hidden_states` `[batch, tokens, dim]` attending to
    /// `encoder_hidden_states` `[batch, length, cross_attention_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, hidden_states: &Tensor, encoder: &Tensor) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        let n = self.norm1.forward(hidden_states)?;
        let a = self
            .attn1
            .forward(&n, self.only_cross_attention.then_some(encoder))?;
        let h = a.add(hidden_states)?;
        let a = self
            .attn2
            .forward(&self.norm2.forward(&h)?, Some(encoder))?;
        let h = a.add(&h)?;
        let f = self.ff.forward(&self.norm3.forward(&h)?)?;
        f.add(&h)
    }
}
