//! SAM's prompt encoder, as transformers 5.23 writes it (`models/sam/modeling_sam.py`):
//! `SamPositionalEmbedding` (random Fourier features of coordinates in `[0, 1]`),
//! `SamMaskEmbedding` (the mask prompt's convolutions) and `SamPromptEncoder` (points with
//! their labels, boxes, masks → the sparse and dense prompt embeddings).
//!
//! Weights under `prompt_encoder.`: `shared_embedding.positional_embedding` (the model's
//! `shared_image_embedding.positional_embedding` when tied), `mask_embed.{conv1, conv2,
//! conv3, layer_norm1, layer_norm2}`, `no_mask_embed.weight`, `point_embed.{i}.weight`,
//! `not_a_point_embed.weight`.
//!
//! Labels, as transformers reads them: 1 a point on the object, 0 a point off it, -1 the
//! background (the `not_a_point_embed` token), -10 a padding point (a zero token).

use super::{
    configuration::{MODEL, SamPromptEncoderConfig},
    vision::{SamChannelLayerNorm, SamVisionConfig},
};
use crate::{
    error::Result,
    nn::Activation,
    weights::{Init, VarBuilder},
};
use onnx_diagnostic_core::{Error as CoreError, Result as CoreResult, SymInt, Tensor, scope};

fn model_error(message: String) -> CoreError {
    CoreError::Model {
        model: MODEL.to_owned(),
        message,
    }
}

/// `SamPositionalEmbedding`: `[sin(2π (2c - 1) G), cos(2π (2c - 1) G)]` of coordinates `c`
/// with the random matrix `G` (`positional_embedding`, `[2, num_pos_feats]`).
#[derive(Clone, Debug)]
pub struct SamPositionalEmbedding {
    positional_embedding: Tensor,
}

impl SamPositionalEmbedding {
    /// Reads `positional_embedding` under `vb`; untrained, it is drawn from N(0, `scale`) as
    /// transformers' `_init_weights` draws it.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, c: &SamVisionConfig) -> Result<Self> {
        Ok(Self {
            positional_embedding: vb.get(
                "positional_embedding",
                &[2, c.num_pos_feats],
                Init::NormalStd(c.scale() as f64),
            )?,
        })
    }

    /// The features `[..., 2 * num_pos_feats]` of `coords` `[..., 2]` (x, y), divided by
    /// `image_size` first when given (pixel coordinates).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, coords: &Tensor, image_size: Option<i64>) -> CoreResult<Tensor> {
        let mut c = coords.clone();
        if let Some(s) = image_size {
            c = c.div_scalar(s as f64)?;
        }
        let c = c
            .mul_scalar(2.0)?
            .sub_scalar(1.0)?
            .to_kind(self.positional_embedding.kind())?
            .matmul(&self.positional_embedding)?
            .mul_scalar(2.0 * std::f64::consts::PI)?;
        Tensor::cat(&[&c.sin()?, &c.cos()?], -1)
    }

    /// The matrix `[2, num_pos_feats]`.
    pub fn weight(&self) -> &Tensor {
        &self.positional_embedding
    }
}

/// A `Conv2d` with bias.
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
}

impl Conv {
    fn load(vb: &VarBuilder<'_>, (cin, cout, k): (i64, i64, i64)) -> Result<Self> {
        Ok(Self {
            weight: vb.get("weight", &[cout, cin, k, k], Init::Normal)?,
            bias: vb.get("bias", &[cout], Init::Zeros)?,
            stride: k,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let s = self.stride;
        x.conv2d(&self.weight, Some(&self.bias), [s, s], [0, 0], [1, 1], 1)
    }
}

/// `SamMaskEmbedding`: a mask `[batch, 1, 4 * grid, 4 * grid]` → `[batch, hidden, grid,
/// grid]` through two stride-2 convolutions (each with a channel LayerNorm and the
/// activation) and a 1×1 one.
#[derive(Clone, Debug)]
pub struct SamMaskEmbedding {
    conv1: Conv,
    layer_norm1: SamChannelLayerNorm,
    conv2: Conv,
    layer_norm2: SamChannelLayerNorm,
    conv3: Conv,
    act: Activation,
}

impl SamMaskEmbedding {
    fn load(vb: &VarBuilder<'_>, c: &SamPromptEncoderConfig) -> Result<Self> {
        let (m, eps) = (c.mask_input_channels, c.layer_norm_eps);
        Ok(Self {
            conv1: Conv::load(&vb.pp("conv1"), (1, m / 4, 2))?,
            layer_norm1: SamChannelLayerNorm::load(vb, "layer_norm1", m / 4, eps)?,
            conv2: Conv::load(&vb.pp("conv2"), (m / 4, m, 2))?,
            layer_norm2: SamChannelLayerNorm::load(vb, "layer_norm2", m, eps)?,
            conv3: Conv::load(&vb.pp("conv3"), (m, c.hidden_size, 1))?,
            act: Activation::from_name(MODEL, &c.hidden_act)?,
        })
    }

    fn forward(&self, masks: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mask_embed");
        let h = self.conv1.forward(masks)?;
        let h = self.act.forward(&self.layer_norm1.forward(&h)?)?;
        let h = self.conv2.forward(&h)?;
        let h = self.act.forward(&self.layer_norm2.forward(&h)?)?;
        self.conv3.forward(&h)
    }
}

/// `SamPromptEncoder`.
#[derive(Clone, Debug)]
pub struct SamPromptEncoder {
    shared_embedding: SamPositionalEmbedding,
    mask_embed: SamMaskEmbedding,
    no_mask_embed: Tensor,
    point_embed: Vec<Tensor>,
    not_a_point_embed: Tensor,
    /// `image_embedding_size`.
    grid: i64,
    /// `image_size`, the scale of the point and box coordinates.
    image_size: i64,
    /// The mask prompt's side, in pixels (four times the grid).
    mask_size: i64,
}

impl SamPromptEncoder {
    /// Reads the encoder under `vb` (`prompt_encoder`), with the positional embedding
    /// `shared_embedding` (read by the caller: it is tied to the model's).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        c: &SamPromptEncoderConfig,
        shared_embedding: SamPositionalEmbedding,
    ) -> Result<Self> {
        let h = c.hidden_size;
        let embedding = |name: String| vb.pp(name).get("weight", &[1, h], Init::Normal);
        Ok(Self {
            shared_embedding,
            mask_embed: SamMaskEmbedding::load(&vb.pp("mask_embed"), c)?,
            no_mask_embed: embedding("no_mask_embed".to_owned())?,
            point_embed: (0..c.num_point_embeddings)
                .map(|i| embedding(format!("point_embed.{i}")))
                .collect::<Result<_>>()?,
            not_a_point_embed: embedding("not_a_point_embed".to_owned())?,
            grid: c.image_embedding_size(),
            image_size: c.image_size,
            mask_size: 4 * c.image_embedding_size(),
        })
    }

    /// `point_embed[i].weight` `[1, hidden]`.
    fn point_embed(&self, i: usize, what: &str) -> CoreResult<&Tensor> {
        self.point_embed.get(i).ok_or_else(|| {
            model_error(format!(
                "{what} use point embedding {i}, but num_point_embeddings is {}",
                self.point_embed.len()
            ))
        })
    }

    /// `_embed_points`: `[batch, point_batch, points (+1 when padded), hidden]`.
    fn embed_points(&self, points: &Tensor, labels: &Tensor, pad: bool) -> CoreResult<Tensor> {
        let mut points = points.add_scalar(0.5)?;
        let mut labels = labels.clone();
        if pad {
            let s = points.shape();
            let (b, p) = (s[0].clone(), s[1].clone());
            let zeros = Tensor::zeros(
                vec![b.clone(), p.clone(), SymInt::new(1), s[3].clone()],
                points.kind(),
                points.device(),
            )?;
            let minus = Tensor::full(
                vec![b, p, SymInt::new(1)],
                -1,
                labels.kind(),
                labels.device(),
            )?;
            points = Tensor::cat(&[&points, &zeros], 2)?;
            labels = Tensor::cat(&[&labels, &minus], 2)?;
        }
        let e = self
            .shared_embedding
            .forward(&points, Some(self.image_size))?;
        let l = labels.unsqueeze(-1)?;
        let e = self.not_a_point_embed.where_cond(&l.eq_scalar(-1)?, &e)?;
        let zero = Tensor::zeros(Vec::<SymInt>::new(), e.kind(), e.device())?;
        let e = e.where_cond(&l.ne_scalar(-10)?, &zero)?;
        let e = e
            .add(
                &self
                    .point_embed(0, "labels 0")?
                    .unsqueeze(0)?
                    .unsqueeze(0)?,
            )?
            .where_cond(&l.eq_scalar(0)?, &e)?;
        e.add(
            &self
                .point_embed(1, "labels 1")?
                .unsqueeze(0)?
                .unsqueeze(0)?,
        )?
        .where_cond(&l.eq_scalar(1)?, &e)
    }

    /// `_embed_boxes`: `[batch, boxes, 2, hidden]` (the two corners).
    fn embed_boxes(&self, boxes: &Tensor) -> CoreResult<Tensor> {
        let s = boxes.shape();
        let coords = boxes.add_scalar(0.5)?.reshape(vec![
            s[0].clone(),
            s[1].clone(),
            SymInt::new(2),
            SymInt::new(2),
        ])?;
        let corners = self
            .shared_embedding
            .forward(&coords, Some(self.image_size))?;
        let added = Tensor::cat(
            &[self.point_embed(2, "boxes")?, self.point_embed(3, "boxes")?],
            0,
        )?;
        corners.add(&added)
    }

    /// The sparse embeddings (`None` without points and boxes) and the dense ones `[batch,
    /// hidden, grid, grid]`. Points are padded with one background point when no box is given.
    ///
    /// # Errors
    /// [`CoreError::Model`] for points without labels, a mask of another size, or labels and
    /// boxes needing point embeddings the config lacks; any error of the ops.
    pub fn forward(
        &self,
        input_points: Option<&Tensor>,
        input_labels: Option<&Tensor>,
        input_boxes: Option<&Tensor>,
        input_masks: Option<&Tensor>,
    ) -> CoreResult<(Option<Tensor>, Tensor)> {
        let _s = scope("prompt_encoder");
        let mut sparse = None;
        let mut batch = SymInt::new(1);
        if let Some(points) = input_points {
            batch = points.size(0)?;
            let labels = input_labels.ok_or_else(|| {
                model_error("If points are provided, labels must also be provided.".to_owned())
            })?;
            sparse = Some(self.embed_points(points, labels, input_boxes.is_none())?);
        }
        if let Some(boxes) = input_boxes {
            batch = boxes.size(0)?;
            let b = self.embed_boxes(boxes)?;
            sparse = Some(match sparse {
                Some(p) => Tensor::cat(&[&p, &b], 2)?,
                None => b,
            });
        }
        let dense = match input_masks {
            Some(m) => {
                let shape = m.concrete_shape();
                if shape.len() != 4 || shape[1] != 1 || shape[2..] != [self.mask_size; 2] {
                    return Err(model_error(format!(
                        "input_masks has shape {shape:?}: it must be [batch, 1, {s}, {s}] (four \
                         times image_embedding_size {})",
                        self.grid,
                        s = self.mask_size
                    )));
                }
                self.mask_embed
                    .forward(&m.to_kind(self.no_mask_embed.kind())?)?
            }
            None => {
                let (g, h) = (self.grid, self.no_mask_embed.concrete_shape()[1]);
                self.no_mask_embed.reshape(vec![1, h, 1, 1])?.expand(vec![
                    batch,
                    SymInt::new(h),
                    SymInt::new(g),
                    SymInt::new(g),
                ])?
            }
        };
        Ok((sparse, dense))
    }
}
