//! Qwen2-VL's vision transformer (`Qwen2VisionTransformerPretrainedModel`) as transformers
//! 5.23 writes it, and Qwen2.5-VL's (`Qwen2_5_VisionTransformerPretrainedModel`: RMSNorms, a
//! gated MLP with biases, and window attention: the merged units are reordered window by
//! window (`get_vision_window_index`), the blocks but `fullatt_block_indexes` attend within
//! each window, and the merged features are put back in order): `PatchEmbed` (a 3-D convolution over each flattened patch of
//! `temporal_patch_size` frames), `Qwen2VLVisionRotaryEmbedding` (the axial 2-D rope of the
//! patch rows and columns), `Qwen2VLVisionBlock`s of `VisionAttention` and `VisionMlp`, and
//! the `PatchMerger` (each `m x m` square of patches to one feature of the text model's width).
//!
//! Where transformers reshapes with `-1`, the sizes are written out (the same values): torch
//! refuses `-1` on zero elements, and with the sizes an input set without images
//! (`pixel_values` `[0, ...]`, `image_grid_thw` `[0, 3]`) runs through the same graph.
//!
//! Written the natural way: `VisionAttention` splits the patches into one attention segment
//! per frame with `cu_seqlens.tolist()` and loops over them, and the position ids loop over
//! `grid_thw.tolist()` ([`get_vision_position_ids`]). Both read the data, so an export stops
//! there; the patches of crates/patch-transformers (`patched_VisionAttention.forward`,
//! `patched_Qwen2VisionTransformerPretrainedModel.forward`) make it export with any number of
//! images of any size.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use tch::Kind;

use super::configuration::{VisionConfig, VlArch};
use crate::{
    error::Result,
    modeling_attention::rotate_half,
    modeling_rope_utils::default_inv_freq,
    nn::{Activation, LayerNorm, Linear, RmsNorm},
    vision_utils::{get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index},
    weights::{Init, VarBuilder},
};

/// The norms of the vision tower: `LayerNorm` (Qwen2-VL) or `Qwen2_5_VLRMSNorm`, eps 1e-6.
#[derive(Clone, Debug)]
pub enum VisionNorm {
    /// Qwen2-VL.
    Layer(LayerNorm),
    /// Qwen2.5-VL.
    Rms(RmsNorm),
}

impl VisionNorm {
    fn load(vb: &VarBuilder<'_>, name: &str, size: i64, arch: VlArch) -> Result<Self> {
        Ok(match arch {
            VlArch::Qwen2VL => Self::Layer(LayerNorm::load(vb, name, size, 1e-6)?),
            VlArch::Qwen2_5VL => Self::Rms(RmsNorm::load(vb, name, size, 1e-6, false)?),
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) => n.forward(x),
        }
    }
}

/// `PatchEmbed`: `Conv3d(in_channels, embed_dim, kernel = stride = [temporal_patch_size,
/// patch_size, patch_size], bias=False)` over each patch, i.e. one projection per patch.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    weight: Tensor,
    in_channels: i64,
    temporal_patch_size: i64,
    patch_size: i64,
    embed_dim: i64,
}

impl PatchEmbed {
    fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        let (c, t, p, e) = (
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.embed_dim,
        );
        Ok(Self {
            weight: vb
                .pp("proj")
                .get("weight", &[e, c, t, p, p], Init::Normal)?,
            in_channels: c,
            temporal_patch_size: t,
            patch_size: p,
            embed_dim: e,
        })
    }

    /// `[patches, C*T*P*P]` → `[patches, embed_dim]` (transformers also takes any layout of the
    /// same values; the processor gives this one).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("patch_embed");
        let (t, p) = (self.temporal_patch_size, self.patch_size);
        // The patch count where transformers writes -1 (`view(-1, ...)` of zero patches is
        // ambiguous to torch: with it, an image-less step runs, see the module doc).
        let n = x.size(0)?;
        let x = x.view(vec![
            n.clone(),
            SymInt::new(self.in_channels),
            SymInt::new(t),
            SymInt::new(p),
            SymInt::new(p),
        ])?;
        x.to_kind(self.weight.kind())?
            .conv3d(&self.weight, None, [t, p, p], [0, 0, 0], [1, 1, 1], 1)?
            .view(vec![n, SymInt::new(self.embed_dim)])
    }
}

/// `Qwen2VLVisionRotaryEmbedding`: the axial rope, the same frequencies (of a quarter of the
/// head) for the row and the column of each patch.
#[derive(Clone, Debug)]
pub struct Qwen2VLVisionRotaryEmbedding {
    inv_freq: Tensor,
}

impl Qwen2VLVisionRotaryEmbedding {
    fn new(cfg: &VisionConfig, vb: &VarBuilder<'_>) -> Result<Self> {
        let inv = default_inv_freq(cfg.rope_theta(), cfg.head_dim() / 2)
            .and_then(|f| f.f_to_device(vb.device()))
            .map_err(|e| {
                crate::Error::Core(onnx_diagnostic_core::Error::Model {
                    model: cfg.arch.class_name().to_owned(),
                    message: e.to_string(),
                })
            })?;
        let mut inv_freq = Tensor::from(inv);
        // A non-persistent buffer: `model.to(dtype)` rounds it, the forward reads it in float32.
        if vb.buffer_dtype() != Kind::Float {
            inv_freq = inv_freq
                .to_kind(vb.buffer_dtype())
                .and_then(|f| f.to_kind(Kind::Float))?;
        }
        Ok(Self { inv_freq })
    }

    /// The frequencies (a buffer).
    pub fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    /// `(cos, sin)` `[patches, head_dim]` (float32) of `position_ids` `[patches, 2]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, position_ids: &Tensor) -> CoreResult<(Tensor, Tensor)> {
        let _s = scope("rotary_pos_emb");
        // [patches, 2, d/4]
        let freqs = position_ids
            .unsqueeze(-1)?
            .to_kind(Kind::Float)?
            .mul(&self.inv_freq)?;
        let recompose = |f: &Tensor| -> CoreResult<Tensor> {
            let hw = Tensor::cat(&[&f.select(1, 0)?, &f.select(1, 1)?], -1)?;
            Tensor::cat(&[&hw, &hw], -1)
        };
        Ok((recompose(&freqs.cos()?)?, recompose(&freqs.sin()?)?))
    }
}

/// `apply_rotary_pos_emb_vision`: the rope in float32 on `q`, `k` `[patches, heads, d]`, cast
/// back to their type.
///
/// # Errors
/// Any error of the ops.
pub fn apply_rotary_pos_emb_vision(
    q: &Tensor,
    k: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> CoreResult<(Tensor, Tensor)> {
    let cos = cos.unsqueeze(-2)?.to_kind(Kind::Float)?;
    let sin = sin.unsqueeze(-2)?.to_kind(Kind::Float)?;
    let rotate = |x: &Tensor| -> CoreResult<Tensor> {
        let xf = x.to_kind(Kind::Float)?;
        xf.mul(&cos)?
            .add(&rotate_half(&xf)?.mul(&sin)?)?
            .to_kind(x.kind())
    };
    Ok((rotate(q)?, rotate(k)?))
}

/// Attention of `q`, `k`, `v` `[1, heads, n, d]` with an optional additive mask, the softmax in
/// float32 (transformers' eager and SDPA attention agree on these values). Returns `[1, n,
/// heads, d]`.
///
/// # Errors
/// Any error of the ops.
pub fn vision_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scaling: f64,
) -> CoreResult<Tensor> {
    let mut w = q.matmul(&k.transpose(2, 3)?)?.mul_scalar(scaling)?;
    if let Some(m) = mask {
        w = w.add(m)?;
    }
    let w = w.to_kind(Kind::Float)?.softmax(-1)?.to_kind(q.kind())?;
    w.matmul(v)?.transpose(1, 2)?.contiguous()
}

/// `VisionAttention`: fused `qkv`, the axial rope, attention within each frame, `proj`.
#[derive(Clone, Debug)]
pub struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
    head_dim: i64,
}

impl VisionAttention {
    fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            qkv: Linear::load(vb, "qkv", d, 3 * d, true)?,
            proj: Linear::load(vb, "proj", d, d, true)?,
            heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// The type of its weights.
    pub fn kind(&self) -> Kind {
        self.qkv.weight().kind()
    }

    /// `head_dim ** -0.5`.
    pub fn scaling(&self) -> f64 {
        (self.head_dim as f64).powf(-0.5)
    }

    /// The rotated queries and keys and the values, each `[1, heads, patches, head_dim]`, of
    /// `hidden_states` `[patches, embed_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn project(
        &self,
        hidden_states: &Tensor,
        position_embeddings: &(Tensor, Tensor),
    ) -> CoreResult<[Tensor; 3]> {
        let n = hidden_states.size(0)?;
        let qkv = self
            .qkv
            .forward(hidden_states)?
            .reshape(vec![
                n,
                SymInt::new(3),
                SymInt::new(self.heads),
                SymInt::new(self.head_dim),
            ])?
            .permute(&[1, 0, 2, 3])?;
        let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
        let (q, k) =
            apply_rotary_pos_emb_vision(&q, &k, &position_embeddings.0, &position_embeddings.1)?;
        let heads_first = |x: &Tensor| x.transpose(0, 1)?.unsqueeze(0);
        Ok([heads_first(&q)?, heads_first(&k)?, heads_first(&v)?])
    }

    /// The output projection of the attention `[1, patches, heads, head_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn output(&self, attn: &Tensor, patches: SymInt) -> CoreResult<Tensor> {
        let width = SymInt::new(self.heads * self.head_dim);
        self.proj
            .forward(&attn.reshape(vec![patches, width])?.contiguous()?)
    }

    /// Attention within each segment of `cu_seqlens` (one per frame): transformers splits the
    /// states with `lengths.tolist()` and loops over the pieces, a data-dependent read an
    /// export stops on. Patchable: `patched_VisionAttention.forward` (crates/patch-transformers)
    /// masks the other segments instead.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::DataDependent`] during an export; any error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        cu_seqlens: &Tensor,
        position_embeddings: &(Tensor, Tensor),
    ) -> CoreResult<Tensor> {
        let _s = scope("attn");
        let n = hidden_states.size(0)?;
        let [q, k, v] = self.project(hidden_states, position_embeddings)?;
        let ends = cu_seqlens.slice(0, Some(SymInt::new(1)), None, 1)?;
        let starts = cu_seqlens.slice(0, None, Some(SymInt::new(-1)), 1)?;
        let lengths = ends.sub(&starts)?.to_vec_i64()?;
        let (mut outs, mut start) = (Vec::with_capacity(lengths.len()), 0);
        for len in lengths {
            let piece = |x: &Tensor| x.narrow(2, start, len);
            outs.push(vision_attention(
                &piece(&q)?,
                &piece(&k)?,
                &piece(&v)?,
                None,
                self.scaling(),
            )?);
            start += len;
        }
        if outs.is_empty() {
            // No segment, no patch (an image-less step): the attention of nothing.
            outs.push(vision_attention(&q, &k, &v, None, self.scaling())?);
        }
        let refs: Vec<&Tensor> = outs.iter().collect();
        self.output(&Tensor::cat(&refs, 1)?, n)
    }
}

/// `VisionMlp` (Qwen2-VL): `fc2(act(fc1(x)))`; `Qwen2_5_VLMLP` (Qwen2.5-VL, with biases):
/// `down_proj(act(gate_proj(x)) * up_proj(x))`.
#[derive(Clone, Debug)]
pub enum VisionMlp {
    /// Qwen2-VL.
    Plain {
        /// `fc1`.
        fc1: Linear,
        /// `fc2`.
        fc2: Linear,
        /// `hidden_act`.
        act: Activation,
    },
    /// Qwen2.5-VL.
    Gated {
        /// `gate_proj`.
        gate: Linear,
        /// `up_proj`.
        up: Linear,
        /// `down_proj`.
        down: Linear,
        /// `hidden_act`.
        act: Activation,
    },
}

impl VisionMlp {
    fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let act = Activation::from_name(cfg.arch.class_name(), &cfg.hidden_act)?;
        Ok(match cfg.arch {
            VlArch::Qwen2VL => {
                let h = (d as f64 * cfg.mlp_ratio) as i64;
                Self::Plain {
                    fc1: Linear::load(vb, "fc1", d, h, true)?,
                    fc2: Linear::load(vb, "fc2", h, d, true)?,
                    act,
                }
            }
            VlArch::Qwen2_5VL => {
                let h = cfg.intermediate_size.unwrap_or(3420);
                Self::Gated {
                    gate: Linear::load(vb, "gate_proj", d, h, true)?,
                    up: Linear::load(vb, "up_proj", d, h, true)?,
                    down: Linear::load(vb, "down_proj", h, d, true)?,
                    act,
                }
            }
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        match self {
            Self::Plain { fc1, fc2, act } => fc2.forward(&act.forward(&fc1.forward(x)?)?),
            Self::Gated {
                gate,
                up,
                down,
                act,
            } => down.forward(&act.forward(&gate.forward(x)?)?.mul(&up.forward(x)?)?),
        }
    }
}

/// `Qwen2VLVisionBlock`: pre-norm attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct Qwen2VLVisionBlock {
    norm1: VisionNorm,
    norm2: VisionNorm,
    /// The attention.
    pub attn: VisionAttention,
    mlp: VisionMlp,
}

impl Qwen2VLVisionBlock {
    fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        Ok(Self {
            norm1: VisionNorm::load(vb, "norm1", cfg.embed_dim, cfg.arch)?,
            norm2: VisionNorm::load(vb, "norm2", cfg.embed_dim, cfg.arch)?,
            attn: VisionAttention::load(&vb.pp("attn"), cfg)?,
            mlp: VisionMlp::load(&vb.pp("mlp"), cfg)?,
        })
    }

    /// The block on `[patches, embed_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        h: &Tensor,
        cu_seqlens: &Tensor,
        position_embeddings: &(Tensor, Tensor),
    ) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("norm1");
            self.norm1.forward(h)?
        };
        let h = h.add(&self.attn.forward(&x, cu_seqlens, position_embeddings)?)?;
        let x = {
            let _n = scope("norm2");
            self.norm2.forward(&h)?
        };
        h.add(&self.mlp.forward(&x)?)
    }
}

/// `PatchMerger`: LayerNorm, then each `m x m` square of consecutive patches concatenated and
/// projected by `Linear, GELU, Linear` (`mlp.0`, `mlp.2`) to the text model's width.
#[derive(Clone, Debug)]
pub struct PatchMerger {
    ln_q: VisionNorm,
    fc1: Linear,
    fc2: Linear,
    hidden: i64,
    /// `spatial_merge_size ** 2`: patches per merged feature.
    merge2: i64,
}

impl PatchMerger {
    fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        let hidden = cfg.embed_dim * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let mlp = vb.pp("mlp");
        Ok(Self {
            ln_q: VisionNorm::load(vb, "ln_q", cfg.embed_dim, cfg.arch)?,
            fc1: Linear::load(&mlp, "0", hidden, hidden, true)?,
            fc2: Linear::load(&mlp, "2", hidden, cfg.hidden_size, true)?,
            hidden,
            merge2: cfg.spatial_merge_size * cfg.spatial_merge_size,
        })
    }

    /// `[patches, embed_dim]` → `[patches / m^2, hidden_size]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("merger");
        let merged = x.size(0)?.floor_div(self.merge2);
        let x = self
            .ln_q
            .forward(x)?
            .view(vec![merged, SymInt::new(self.hidden)])?;
        self.fc2.forward(&self.fc1.forward(&x)?.gelu("none")?)
    }
}

/// `Qwen2VisionTransformerPretrainedModel`: the vision tower.
#[derive(Clone, Debug)]
pub struct Qwen2VisionTransformerPretrainedModel {
    patch_embed: PatchEmbed,
    rotary_pos_emb: Qwen2VLVisionRotaryEmbedding,
    /// The blocks.
    pub blocks: Vec<Qwen2VLVisionBlock>,
    merger: PatchMerger,
    /// `spatial_merge_size`.
    pub spatial_merge_size: i64,
    /// Qwen2.5-VL's window attention.
    pub window: Option<WindowAttention>,
}

/// Qwen2.5-VL's window attention settings.
#[derive(Clone, Debug)]
pub struct WindowAttention {
    /// `window_size` in pixels.
    pub window_size: i64,
    /// `patch_size` in pixels.
    pub patch_size: i64,
    /// The window side in merged units.
    pub merger_window: i64,
    /// The blocks attending over whole frames.
    pub full: Vec<usize>,
}

/// The window order of the merged units (`window_index` `[units]`) and the windows' bounds
/// (`cu_window_seqlens`), from [`get_vision_window_index`] or its patched form.
#[derive(Clone, Debug)]
pub struct Windows {
    /// `window_index`.
    pub index: Tensor,
    /// `cu_window_seqlens`.
    pub cu_seqlens: Tensor,
}

impl Qwen2VisionTransformerPretrainedModel {
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &VisionConfig) -> Result<Self> {
        let blocks = (0..cfg.depth)
            .map(|i| Qwen2VLVisionBlock::load(&vb.pp(format!("blocks.{i}")), cfg))
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_embed: PatchEmbed::load(&vb.pp("patch_embed"), cfg)?,
            rotary_pos_emb: Qwen2VLVisionRotaryEmbedding::new(cfg, vb)?,
            blocks,
            merger: PatchMerger::load(&vb.pp("merger"), cfg)?,
            spatial_merge_size: cfg.spatial_merge_size,
            window: match cfg.arch {
                VlArch::Qwen2VL => None,
                VlArch::Qwen2_5VL => Some(WindowAttention {
                    window_size: cfg.window_size.unwrap_or(112),
                    patch_size: cfg.patch_size,
                    merger_window: cfg.merger_window().unwrap_or(1),
                    full: cfg.fullatt_block_indexes.clone().unwrap_or_default(),
                }),
            },
        })
    }

    /// The rotary embedding (its `inv_freq` is the buffer `rotary_pos_emb.inv_freq`).
    pub fn rotary_pos_emb(&self) -> &Qwen2VLVisionRotaryEmbedding {
        &self.rotary_pos_emb
    }

    /// The last hidden states `[patches, embed_dim]` and the merged features `[patches / m^2,
    /// hidden_size]` of `pixel_values` `[patches, C*T*P*P]` whose patches have the `(row,
    /// column)` `position_ids` `[patches, 2]`, attending within the segments of `cu_seqlens`,
    /// and, for Qwen2.5-VL, within the `windows` but in the full-attention blocks (the states
    /// are in window order inside; the merged features come back in the original order).
    ///
    /// # Errors
    /// Any error of the ops; Qwen2.5-VL without `windows`.
    pub fn forward_with_positions(
        &self,
        pixel_values: &Tensor,
        position_ids: &Tensor,
        cu_seqlens: &Tensor,
        windows: Option<&Windows>,
    ) -> CoreResult<(Tensor, Tensor)> {
        let mut h = self.patch_embed.forward(pixel_values)?;
        let (mut cos, mut sin) = self.rotary_pos_emb.forward(position_ids)?;
        let unit = self.spatial_merge_size * self.spatial_merge_size;
        // `permute_input_for_window_attn`: whole merged units in window order.
        let permute = |x: &Tensor, index: &Tensor| -> CoreResult<Tensor> {
            let (n, width) = (x.size(0)?, x.size(1)?);
            x.reshape(vec![n.floor_div(unit), SymInt::new(unit), width.clone()])?
                .index_select(0, index)?
                .reshape(vec![n, width])
        };
        if let (Some(_), Some(w)) = (&self.window, windows) {
            h = permute(&h, &w.index)?;
            cos = permute(&cos, &w.index)?;
            sin = permute(&sin, &w.index)?;
        } else if self.window.is_some() {
            return Err(onnx_diagnostic_core::Error::Model {
                model: "Qwen2_5_VisionTransformerPretrainedModel".to_owned(),
                message: "window attention without its window index".to_owned(),
            });
        }
        let position_embeddings = (cos, sin);
        for (i, blk) in self.blocks.iter().enumerate() {
            let _b = scope(&format!("blocks.{i}"));
            let segments = match (&self.window, windows) {
                (Some(win), Some(w)) if !win.full.contains(&i) => &w.cu_seqlens,
                _ => cu_seqlens,
            };
            h = blk.forward(&h, segments, &position_embeddings)?;
        }
        let mut merged = self.merger.forward(&h)?;
        if let (Some(_), Some(w)) = (&self.window, windows) {
            merged = merged.index_select(0, &w.index.argsort(0, false)?)?;
        }
        Ok((h, merged))
    }

    /// The forward of transformers: position ids and segments from `grid_thw` (and Qwen2.5-VL's
    /// windows), then [`Qwen2VisionTransformerPretrainedModel::forward_with_positions`].
    /// Patchable: `patched_Qwen2VisionTransformerPretrainedModel.forward` computes the position
    /// ids (and the windows) from the patch index instead of looping over `grid_thw.tolist()`.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::DataDependent`] during an export (the position ids);
    /// any error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grid_thw: &Tensor,
    ) -> CoreResult<(Tensor, Tensor)> {
        let _s = scope("visual");
        let position_ids = get_vision_position_ids(grid_thw, self.spatial_merge_size)?;
        let cu_seqlens = get_vision_cu_seqlens(grid_thw)?;
        let windows = match &self.window {
            Some(w) => {
                let (index, cu) = get_vision_window_index(
                    grid_thw,
                    self.spatial_merge_size,
                    w.window_size,
                    w.patch_size,
                )?;
                Some(Windows {
                    index,
                    cu_seqlens: cu,
                })
            }
            None => None,
        };
        self.forward_with_positions(pixel_values, &position_ids, &cu_seqlens, windows.as_ref())
    }
}
