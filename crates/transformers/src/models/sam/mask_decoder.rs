//! SAM's mask decoder, as transformers 5.23 writes it (`models/sam/modeling_sam.py`):
//! `SamAttention` (with a projection to `hidden_size / downsample_rate`),
//! `SamTwoWayAttentionBlock` and `SamTwoWayTransformer` (tokens and image attending to each
//! other), `SamFeedForward`, and `SamMaskDecoder`: the IoU and mask tokens joined to the
//! prompt tokens, the transformer, the image upscaled 4× by two transposed convolutions, one
//! hypernetwork MLP per mask token, and the IoU head.
//!
//! Weights under `mask_decoder.`: `iou_token`, `mask_tokens`, `transformer.layers.{i}.
//! {self_attn, layer_norm1, cross_attn_token_to_image, layer_norm2, mlp.{lin1, lin2},
//! layer_norm3, layer_norm4, cross_attn_image_to_token}`, `transformer.
//! {final_attn_token_to_image, layer_norm_final_attn}`, `upscale_conv1`, `upscale_conv2`,
//! `upscale_layer_norm`, `output_hypernetworks_mlps.{i}.{proj_in, layers.{j}, proj_out}`,
//! `iou_prediction_head`; each attention's `{q_proj, k_proj, v_proj, out_proj}`.
//!
//! Decisions:
//! - The prompt tokens are joined to the output tokens in [`SamMaskDecoder::forward`] as
//!   transformers wrote it before 5.x, `if sparse_prompt_embeddings.sum().item() != 0`: the
//!   branch on the data that the seeds' `patched_SamMaskDecoder.forward` replaces by a
//!   `torch.cond`. transformers 5.23 tests `sparse_prompt_embeddings is not None` instead; the
//!   two agree on every prompt whose embedding is not all zeros, which a point or a box always
//!   gives (a box adds `point_embed[2]`, a padded point `not_a_point_embed`). Without points
//!   and boxes there are no prompt tokens, as in 5.23.
//! - Attention is transformers' eager form (`matmul(q, kᵀ) * scaling`, softmax in float32);
//!   `repeat_interleave(point_batch, 0)` is written as unsqueeze-expand-reshape, the same
//!   values for a point batch known only at run time.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use tch::Kind;

use super::{
    configuration::SamMaskDecoderConfig,
    vision::{SamChannelLayerNorm, SamMLPBlock},
};
use crate::{
    error::Result,
    nn::{Activation, LayerNorm, Linear},
    weights::{Init, VarBuilder},
};

/// `SamAttention`: multi-head attention whose projections have `hidden / downsample`
/// features, over `[batch, point_batch, tokens, hidden]`.
#[derive(Clone, Debug)]
pub struct SamAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
    internal: i64,
}

impl SamAttention {
    fn load(vb: &VarBuilder<'_>, c: &SamMaskDecoderConfig, downsample: i64) -> Result<Self> {
        let (h, internal) = (c.hidden_size, c.hidden_size / downsample);
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", h, internal, true)?,
            k_proj: Linear::load(vb, "k_proj", h, internal, true)?,
            v_proj: Linear::load(vb, "v_proj", h, internal, true)?,
            out_proj: Linear::load(vb, "out_proj", internal, h, true)?,
            heads: c.num_attention_heads,
            internal,
        })
    }

    /// `_separate_heads`: `[b, p, n, c]` → `[b * p, heads, n, c / heads]`.
    fn separate(&self, x: &Tensor) -> CoreResult<Tensor> {
        let s = x.shape();
        x.reshape(vec![
            &s[0] * &s[1],
            s[2].clone(),
            SymInt::new(self.heads),
            SymInt::new(self.internal / self.heads),
        ])?
        .transpose(1, 2)
    }

    /// The attention of `query` over `key` / `value`, back to `query`'s shape.
    fn forward(&self, query: &Tensor, key: &Tensor, value: &Tensor) -> CoreResult<Tensor> {
        let qs = query.shape();
        let q = self.separate(&self.q_proj.forward(query)?)?;
        let k = self.separate(&self.k_proj.forward(key)?)?;
        let v = self.separate(&self.v_proj.forward(value)?)?;
        let scaling = ((self.internal / self.heads) as f64).powf(-0.5);
        let w = q.matmul(&k.transpose(2, 3)?)?.mul_scalar(scaling)?;
        let w = w.to_kind(Kind::Float)?.softmax(-1)?.to_kind(q.kind())?;
        let out = w.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape(vec![
            qs[0].clone(),
            qs[1].clone(),
            qs[2].clone(),
            SymInt::new(self.internal),
        ])?;
        self.out_proj.forward(&out)
    }
}

/// `SamTwoWayAttentionBlock`: token self-attention, tokens → image, the MLP on the tokens,
/// image → tokens, each followed by a LayerNorm.
#[derive(Clone, Debug)]
pub struct SamTwoWayAttentionBlock {
    self_attn: SamAttention,
    layer_norm1: LayerNorm,
    cross_attn_token_to_image: SamAttention,
    layer_norm2: LayerNorm,
    mlp: SamMLPBlock,
    layer_norm3: LayerNorm,
    layer_norm4: LayerNorm,
    cross_attn_image_to_token: SamAttention,
    skip_first_layer_pe: bool,
}

impl SamTwoWayAttentionBlock {
    fn load(
        vb: &VarBuilder<'_>,
        c: &SamMaskDecoderConfig,
        skip_first_layer_pe: bool,
    ) -> Result<Self> {
        // `SamTwoWayTransformer` builds its blocks with `attention_downsample_rate`'s default
        // argument, 2, not the config's (which only the final attention reads).
        let (h, eps, rate) = (c.hidden_size, c.layer_norm_eps, 2);
        Ok(Self {
            self_attn: SamAttention::load(&vb.pp("self_attn"), c, 1)?,
            layer_norm1: LayerNorm::load(vb, "layer_norm1", h, eps)?,
            cross_attn_token_to_image: SamAttention::load(
                &vb.pp("cross_attn_token_to_image"),
                c,
                rate,
            )?,
            layer_norm2: LayerNorm::load(vb, "layer_norm2", h, eps)?,
            mlp: SamMLPBlock::load(&vb.pp("mlp"), (h, c.mlp_dim), &c.hidden_act)?,
            layer_norm3: LayerNorm::load(vb, "layer_norm3", h, eps)?,
            layer_norm4: LayerNorm::load(vb, "layer_norm4", h, eps)?,
            cross_attn_image_to_token: SamAttention::load(
                &vb.pp("cross_attn_image_to_token"),
                c,
                rate,
            )?,
            skip_first_layer_pe,
        })
    }

    /// `(queries, keys)` after the block; `query_pe` is the prompt tokens, `key_pe` the
    /// image's positional embedding.
    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> CoreResult<(Tensor, Tensor)> {
        let queries = {
            let _s = scope("self_attn");
            if self.skip_first_layer_pe {
                self.self_attn.forward(queries, queries, queries)?
            } else {
                let q = queries.add(query_pe)?;
                queries.add(&self.self_attn.forward(&q, &q, queries)?)?
            }
        };
        let queries = self.layer_norm1.forward(&queries)?;
        let q = queries.add(query_pe)?;
        let k = keys.add(key_pe)?;
        let out = {
            let _s = scope("cross_attn_token_to_image");
            self.cross_attn_token_to_image.forward(&q, &k, keys)?
        };
        let queries = self.layer_norm2.forward(&queries.add(&out)?)?;
        let queries = {
            let _s = scope("mlp");
            queries.add(&self.mlp.forward(&queries)?)?
        };
        let queries = self.layer_norm3.forward(&queries)?;
        let q = queries.add(query_pe)?;
        let out = {
            let _s = scope("cross_attn_image_to_token");
            self.cross_attn_image_to_token.forward(&k, &q, &queries)?
        };
        let keys = self.layer_norm4.forward(&keys.add(&out)?)?;
        Ok((queries, keys))
    }
}

/// `SamTwoWayTransformer`.
#[derive(Clone, Debug)]
pub struct SamTwoWayTransformer {
    layers: Vec<SamTwoWayAttentionBlock>,
    final_attn_token_to_image: SamAttention,
    layer_norm_final_attn: LayerNorm,
}

impl SamTwoWayTransformer {
    fn load(vb: &VarBuilder<'_>, c: &SamMaskDecoderConfig) -> Result<Self> {
        Ok(Self {
            layers: (0..c.num_hidden_layers)
                .map(|i| SamTwoWayAttentionBlock::load(&vb.pp(format!("layers.{i}")), c, i == 0))
                .collect::<Result<_>>()?,
            final_attn_token_to_image: SamAttention::load(
                &vb.pp("final_attn_token_to_image"),
                c,
                c.attention_downsample_rate,
            )?,
            // `nn.LayerNorm(hidden_size)`: torch's default epsilon, not the config's.
            layer_norm_final_attn: LayerNorm::load(
                vb,
                "layer_norm_final_attn",
                c.hidden_size,
                1e-5,
            )?,
        })
    }

    /// The tokens `[b, p, n, hidden]` and the image `[b * p, 1, grid², hidden]` after the
    /// transformer, from the tokens and the image `[b * p, hidden, grid, grid]`.
    fn forward(
        &self,
        point_embeddings: &Tensor,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
    ) -> CoreResult<(Tensor, Tensor)> {
        let _s = scope("transformer");
        let flat = |t: &Tensor| t.flatten(2, -1)?.transpose(1, 2)?.unsqueeze(1);
        let (image, pe) = (flat(image_embeddings)?, flat(image_pe)?);
        let (mut queries, mut keys) = (point_embeddings.clone(), image);
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            (queries, keys) = layer.forward(&queries, &keys, point_embeddings, &pe)?;
        }
        let q = queries.add(point_embeddings)?;
        let k = keys.add(&pe)?;
        let out = {
            let _a = scope("final_attn_token_to_image");
            self.final_attn_token_to_image.forward(&q, &k, &keys)?
        };
        let queries = self.layer_norm_final_attn.forward(&queries.add(&out)?)?;
        Ok((queries, keys))
    }
}

/// `SamFeedForward`: `proj_in`, ReLU, `num_layers - 2` ReLU layers, `proj_out`.
#[derive(Clone, Debug)]
pub struct SamFeedForward {
    proj_in: Linear,
    layers: Vec<Linear>,
    proj_out: Linear,
}

impl SamFeedForward {
    fn load(vb: &VarBuilder<'_>, (i, h, o): (i64, i64, i64), num_layers: i64) -> Result<Self> {
        Ok(Self {
            proj_in: Linear::load(vb, "proj_in", i, h, true)?,
            layers: (0..(num_layers - 2).max(0))
                .map(|j| Linear::load(&vb.pp("layers"), &j.to_string(), h, h, true))
                .collect::<Result<_>>()?,
            proj_out: Linear::load(vb, "proj_out", h, o, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let mut h = self.proj_in.forward(x)?.relu()?;
        for layer in &self.layers {
            h = layer.forward(&h)?.relu()?;
        }
        self.proj_out.forward(&h)
    }
}

/// A `ConvTranspose2d` of kernel 2 and stride 2.
#[derive(Clone, Debug)]
struct Upscale {
    weight: Tensor,
    bias: Tensor,
}

impl Upscale {
    fn load(vb: &VarBuilder<'_>, cin: i64, cout: i64) -> Result<Self> {
        Ok(Self {
            weight: vb.get("weight", &[cin, cout, 2, 2], Init::Normal)?,
            bias: vb.get("bias", &[cout], Init::Zeros)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        x.conv_transpose2d(
            &self.weight,
            Some(&self.bias),
            [2, 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

/// `SamMaskDecoder`.
#[derive(Clone, Debug)]
pub struct SamMaskDecoder {
    iou_token: Tensor,
    mask_tokens: Tensor,
    transformer: SamTwoWayTransformer,
    upscale_conv1: Upscale,
    upscale_layer_norm: SamChannelLayerNorm,
    upscale_conv2: Upscale,
    output_hypernetworks_mlps: Vec<SamFeedForward>,
    iou_prediction_head: SamFeedForward,
    num_mask_tokens: i64,
}

impl SamMaskDecoder {
    /// Reads the decoder under `vb` (`mask_decoder`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, c: &SamMaskDecoderConfig) -> Result<Self> {
        let (h, m) = (c.hidden_size, c.num_mask_tokens());
        let mlps = vb.pp("output_hypernetworks_mlps");
        Ok(Self {
            iou_token: vb.pp("iou_token").get("weight", &[1, h], Init::Normal)?,
            mask_tokens: vb.pp("mask_tokens").get("weight", &[m, h], Init::Normal)?,
            transformer: SamTwoWayTransformer::load(&vb.pp("transformer"), c)?,
            upscale_conv1: Upscale::load(&vb.pp("upscale_conv1"), h, h / 4)?,
            upscale_layer_norm: SamChannelLayerNorm::load(vb, "upscale_layer_norm", h / 4, 1e-6)?,
            upscale_conv2: Upscale::load(&vb.pp("upscale_conv2"), h / 4, h / 8)?,
            output_hypernetworks_mlps: (0..m)
                .map(|i| SamFeedForward::load(&mlps.pp(i.to_string()), (h, h, h / 8), 3))
                .collect::<Result<_>>()?,
            iou_prediction_head: SamFeedForward::load(
                &vb.pp("iou_prediction_head"),
                (h, c.iou_head_hidden_dim, m),
                c.iou_head_depth,
            )?,
            num_mask_tokens: m,
        })
    }

    /// The IoU token and the mask tokens, `[batch, point_batch, 1 + num_mask_tokens, hidden]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn output_tokens(&self, batch: &SymInt, point_batch: &SymInt) -> CoreResult<Tensor> {
        let t = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?;
        let (n, h) = (t.concrete_shape()[0], t.concrete_shape()[1]);
        t.unsqueeze(0)?.unsqueeze(0)?.expand(vec![
            batch.clone(),
            point_batch.clone(),
            SymInt::new(n),
            SymInt::new(h),
        ])
    }

    /// `SamMaskDecoder.forward`: `(masks [b, p, masks, 4·grid, 4·grid], iou [b, p, masks])`
    /// from the image embeddings `[b, hidden, grid, grid]`, their positional embedding, the
    /// sparse prompt tokens `[b, p, n, hidden]` and the dense ones `[b, hidden, grid, grid]`;
    /// the `num_multimask_outputs` masks when `multimask_output`, else the single one.
    ///
    /// The prompt tokens are joined after a branch on their values (see the module doc).
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::DataDependent`] when exported without the patch; any
    /// error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_positional_embeddings: &Tensor,
        sparse_prompt_embeddings: Option<&Tensor>,
        dense_prompt_embeddings: &Tensor,
        multimask_output: bool,
    ) -> CoreResult<(Tensor, Tensor)> {
        let batch = image_embeddings.size(0)?;
        let point_batch = match sparse_prompt_embeddings {
            Some(s) => s.size(1)?,
            None => SymInt::new(1),
        };
        let output_tokens = self.output_tokens(&batch, &point_batch)?;
        let tokens = match sparse_prompt_embeddings {
            // `if sparse_prompt_embeddings.sum().item() != 0:`
            Some(s) if s.sum(&[], false)?.ne_scalar(0.0)?.to_bool()? => {
                Tensor::cat(&[&output_tokens, s], 2)?
            }
            _ => output_tokens,
        };
        self.decode(
            &tokens,
            image_embeddings,
            image_positional_embeddings,
            dense_prompt_embeddings,
            multimask_output,
        )
    }

    /// The rest of the forward once the tokens `[b, p, n, hidden]` are joined: the
    /// transformer, the upscaling, the hypernetworks and the IoU head.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn decode(
        &self,
        tokens: &Tensor,
        image_embeddings: &Tensor,
        image_positional_embeddings: &Tensor,
        dense_prompt_embeddings: &Tensor,
        multimask_output: bool,
    ) -> CoreResult<(Tensor, Tensor)> {
        let s = image_embeddings.shape();
        let (batch, channels, height, width) = (&s[0], &s[1], &s[2], &s[3]);
        let point_batch = tokens.size(1)?;
        let point_embeddings = tokens.to_kind(self.iou_token.kind())?;
        let per_point = |t: &Tensor| {
            let ts = t.shape();
            t.unsqueeze(1)?
                .expand(vec![
                    ts[0].clone(),
                    point_batch.clone(),
                    ts[1].clone(),
                    ts[2].clone(),
                    ts[3].clone(),
                ])?
                .reshape(vec![
                    &ts[0] * &point_batch,
                    ts[1].clone(),
                    ts[2].clone(),
                    ts[3].clone(),
                ])
        };
        let image = per_point(&image_embeddings.add(dense_prompt_embeddings)?)?;
        let image_pe = per_point(image_positional_embeddings)?;
        let (point_embedding, image) =
            self.transformer
                .forward(&point_embeddings, &image, &image_pe)?;
        let iou_token_out = point_embedding.select(2, 0)?;
        let mask_tokens_out = point_embedding.narrow(2, 1, self.num_mask_tokens)?;

        let _s = scope("upscale");
        let image = image.transpose(2, 3)?.reshape(vec![
            batch * &point_batch,
            channels.clone(),
            height.clone(),
            width.clone(),
        ])?;
        let up = self.upscale_conv1.forward(&image)?;
        let up = Activation::Gelu.forward(&self.upscale_layer_norm.forward(&up)?)?;
        let up = Activation::Gelu.forward(&self.upscale_conv2.forward(&up)?)?;
        let hyper: Vec<Tensor> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_tokens_out.select(2, i as i64)?))
            .collect::<CoreResult<_>>()?;
        let hyper_in = Tensor::stack(&hyper.iter().collect::<Vec<_>>(), 2)?;
        let us = up.shape();
        let (c8, h4, w4) = (&us[1], &us[2], &us[3]);
        let up = up.reshape(vec![
            batch.clone(),
            point_batch.clone(),
            c8.clone(),
            h4 * w4,
        ])?;
        let masks = hyper_in.matmul(&up)?.reshape(vec![
            batch.clone(),
            point_batch.clone(),
            SymInt::new(self.num_mask_tokens),
            h4.clone(),
            w4.clone(),
        ])?;
        let iou_pred = self.iou_prediction_head.forward(&iou_token_out)?;
        let (start, len) = if multimask_output {
            (1, self.num_mask_tokens - 1)
        } else {
            (0, 1)
        };
        Ok((
            masks.narrow(2, start, len)?,
            iou_pred.narrow(2, start, len)?,
        ))
    }
}
