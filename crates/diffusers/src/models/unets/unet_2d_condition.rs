//! `UNet2DConditionModel` of diffusers 0.42 (`models/unets/unet_2d_condition.py`), the
//! denoiser of Stable Diffusion 1.x/2.x: the sinusoidal timestep embedding, `conv_in`, the
//! down blocks, the cross-attention mid block, the up blocks fed with the down blocks' states,
//! `conv_norm_out`, `conv_out`. The config is diffusers' `config.json`, the weights
//! `diffusion_pytorch_model.safetensors`, both with their names.
//!
//! Decisions:
//! - diffusers' `attention_head_dim` is the number of heads (its naming issue 2011:
//!   `num_attention_heads = num_attention_heads or attention_head_dim`); a config that sets
//!   `num_attention_heads` is refused as diffusers refuses it.
//! - Only what the text-to-image UNets use is built: `positional` time embedding, no class,
//!   addition or encoder-hidden projections, `default` attention, the five block types of the
//!   module `unet_2d_blocks`, `UNetMidBlock2DCrossAttn` or no mid block. Any other value is
//!   [`Error::Unsupported`] naming the field, never a different model.
//! - The forward keeps diffusers' control flow: [`UNet2DConditionModel::forward_upsample_size`]
//!   decides on `sample.shape[-2:] % 2**num_upsamplers` and, when a size is not a multiple,
//!   the up blocks upsample to the skip states' sizes. During an export with a dynamic height
//!   or width the decision is a guard on the sizes (the graph then only holds for multiples);
//!   the patch `patched_UNet2DConditionModel.forward_upsample_size` (crates/patch-diffusers)
//!   always passes the skip sizes, which gives the same values on every size.

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Rel, Result as CoreResult, Tensor, Value, scope};
use onnx_diagnostic_transformers::{Error, Result, nn::Activation, weights::Weights};
use serde::Deserialize;

use crate::{
    models::{
        embeddings::{TimestepEmbedding, Timesteps},
        resnet::{ResnetSettings, TimeEmbeddingNorm},
        unets::unet_2d_blocks::{
            BlockDims, CrossAttnSettings, DownBlock, UNetMidBlock2DCrossAttn, UpBlock,
        },
    },
    nn::{Conv2d, GroupNorm},
    outputs::UNet2DConditionOutput,
};

const CLASS: &str = "UNet2DConditionModel";

/// A config value given once for every block or as one value per block.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per down block.
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block of `n`.
    fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Many(v) if v.len() == n => Ok(v.clone()),
            Self::Many(v) => Err(field_error(
                field,
                format!(
                    "{} values for {n} down blocks: give one value or one per block",
                    v.len()
                ),
            )),
        }
    }
}

fn field_error(field: &str, message: String) -> Error {
    Error::ConfigField {
        model: CLASS.to_owned(),
        field: field.to_owned(),
        message,
    }
}

fn unsupported(feature: String) -> Error {
    Error::Unsupported {
        model: CLASS.to_owned(),
        feature,
    }
}

fn d_down() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn d_up() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".to_owned())
}
fn d_4() -> i64 {
    4
}
fn d_true() -> bool {
    true
}
fn d_one_f() -> f64 {
    1.0
}
fn d_one_i() -> i64 {
    1
}
fn d_3() -> i64 {
    3
}
fn d_channels() -> Vec<i64> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> PerBlock<i64> {
    PerBlock::One(2)
}
fn d_silu() -> String {
    "silu".to_owned()
}
fn d_groups() -> Option<i64> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_cross() -> PerBlock<i64> {
    PerBlock::One(1280)
}
fn d_tlayers() -> PerBlock<i64> {
    PerBlock::One(1)
}
fn d_heads() -> PerBlock<i64> {
    PerBlock::One(8)
}
fn d_only_cross() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn d_default() -> String {
    "default".to_owned()
}
fn d_positional() -> String {
    "positional".to_owned()
}

/// `UNet2DConditionModel`'s `config.json` (diffusers' names and defaults).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// `sample_size`: the latent height and width it was trained at (int or pair).
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
    /// `in_channels` (4).
    #[serde(default = "d_4")]
    pub in_channels: i64,
    /// `out_channels` (4).
    #[serde(default = "d_4")]
    pub out_channels: i64,
    /// `center_input_sample`: `2 * sample - 1` first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// `flip_sin_to_cos` (true): cosines first in the timestep embedding.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// `freq_shift` (0).
    #[serde(default)]
    pub freq_shift: f64,
    /// `down_block_types`.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `mid_block_type` (`null`: no mid block).
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// `up_block_types`.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// `only_cross_attention`.
    #[serde(default = "d_only_cross")]
    pub only_cross_attention: PerBlock<bool>,
    /// `block_out_channels`.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    /// `layers_per_block`.
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock<i64>,
    /// `downsample_padding` (1).
    #[serde(default = "d_one_i")]
    pub downsample_padding: i64,
    /// `mid_block_scale_factor` (1).
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// `act_fn` (`silu`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// `norm_num_groups` (32).
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<i64>,
    /// `norm_eps` (1e-5).
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// `cross_attention_dim` (1280).
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock<i64>,
    /// `transformer_layers_per_block` (1).
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: PerBlock<i64>,
    /// `reverse_transformer_layers_per_block`: only `null`.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// `encoder_hid_dim_type`: only `null`.
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    /// `attention_head_dim` (8): the number of heads of each block.
    #[serde(default = "d_heads")]
    pub attention_head_dim: PerBlock<i64>,
    /// `num_attention_heads`: must be `null` (diffusers refuses it).
    #[serde(default)]
    pub num_attention_heads: Option<serde_json::Value>,
    /// `dual_cross_attention`: only false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// `use_linear_projection`: `proj_in`/`proj_out` are linear layers, not 1×1 convolutions.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// `class_embed_type`: only `null`.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// `addition_embed_type`: only `null`.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// `num_class_embeds`: only `null`.
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    /// `upcast_attention`: no effect with diffusers' default processor (`AttnProcessor2_0`).
    #[serde(default)]
    pub upcast_attention: bool,
    /// `resnet_time_scale_shift` (`default` or `scale_shift`).
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// `resnet_skip_time_act`.
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    /// `resnet_out_scale_factor` (1).
    #[serde(default = "d_one_f")]
    pub resnet_out_scale_factor: f64,
    /// `time_embedding_type`: only `positional`.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// `time_embedding_dim` (default `4 * block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    /// `time_embedding_act_fn`: an activation after the time embedding.
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    /// `timestep_post_act`: `TimestepEmbedding`'s post-activation.
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    /// `time_cond_proj_dim`: only `null`.
    #[serde(default)]
    pub time_cond_proj_dim: Option<i64>,
    /// `conv_in_kernel` (3).
    #[serde(default = "d_3")]
    pub conv_in_kernel: i64,
    /// `conv_out_kernel` (3).
    #[serde(default = "d_3")]
    pub conv_out_kernel: i64,
    /// `attention_type`: only `default`.
    #[serde(default = "d_default")]
    pub attention_type: String,
    /// `class_embeddings_concat`: only false.
    #[serde(default)]
    pub class_embeddings_concat: bool,
    /// `cross_attention_norm`: only `null`.
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
}

impl Config {
    /// Parses a `config.json` text (`path` names it in errors).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field that does not parse.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: format!("{CLASS}: field {}: {}", e.path(), e.inner()),
        })
    }

    /// Reads `config.json` at `path`.
    ///
    /// # Errors
    /// As [`Config::from_json`], or a file that cannot be read.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_json(&text, path)
    }

    /// `2 ** num_upsamplers`: what the height and width must be multiples of for the up
    /// blocks to upsample by 2 without the skip sizes.
    pub fn overall_up_factor(&self) -> i64 {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The refusals of the features this crate does not build, and the sizes that do not fit.
    fn check(&self) -> Result<()> {
        let refuse = |field: &str, value: String| {
            Err(unsupported(format!(
                "{field} = {value} (only what text-to-image UNets use is built: see the \
                 module doc of unet_2d_condition)"
            )))
        };
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(field_error("block_out_channels", "is empty".to_owned()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(field_error(
                "down_block_types",
                format!(
                    "{} down and {} up block types for {n} block_out_channels: give one of each \
                     per block",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        if let Some(v) = &self.num_attention_heads
            && !v.is_null()
        {
            return Err(field_error(
                "num_attention_heads",
                "diffusers refuses it (its issue 2011): give the number of heads as \
                 attention_head_dim"
                    .to_owned(),
            ));
        }
        if self.dual_cross_attention {
            return refuse("dual_cross_attention", "true".to_owned());
        }
        for (field, value) in [
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
            ("cross_attention_norm", &self.cross_attention_norm),
        ] {
            if let Some(v) = value {
                return refuse(field, format!("{v:?}"));
            }
        }
        if let Some(v) = self.num_class_embeds {
            return refuse("num_class_embeds", v.to_string());
        }
        if let Some(v) = self.time_cond_proj_dim {
            return refuse("time_cond_proj_dim", v.to_string());
        }
        if let Some(v) = &self.reverse_transformer_layers_per_block
            && !v.is_null()
        {
            return refuse("reverse_transformer_layers_per_block", v.to_string());
        }
        if self.time_embedding_type != "positional" {
            return refuse(
                "time_embedding_type",
                format!("{:?}", self.time_embedding_type),
            );
        }
        if self.attention_type != "default" {
            return refuse("attention_type", format!("{:?}", self.attention_type));
        }
        if self.class_embeddings_concat {
            return refuse("class_embeddings_concat", "true".to_owned());
        }
        if let Some(m) = &self.mid_block_type
            && m != "UNetMidBlock2DCrossAttn"
        {
            return refuse("mid_block_type", format!("{m:?}"));
        }
        let Some(groups) = self.norm_num_groups else {
            return refuse("norm_num_groups", "null".to_owned());
        };
        for c in &self.block_out_channels {
            if groups <= 0 || *c <= 0 || c % groups != 0 {
                return Err(field_error(
                    "norm_num_groups",
                    format!("{groups} groups do not divide {c} channels of block_out_channels"),
                ));
            }
        }
        for (i, heads) in self
            .attention_head_dim
            .per_block(n, "attention_head_dim")?
            .iter()
            .enumerate()
        {
            if *heads <= 0 {
                return Err(field_error(
                    "attention_head_dim",
                    format!("{heads} heads for block {i}"),
                ));
            }
        }
        Ok(())
    }
}

/// `UNet2DConditionModel`.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    config: Config,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    time_embed_act: Option<Activation>,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<UNetMidBlock2DCrossAttn>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_act: Activation,
    conv_out: Conv2d,
    params: Vec<(String, Tensor)>,
}

/// A block type without the `UNetRes` prefix diffusers drops.
fn block_type(t: &str) -> &str {
    t.strip_prefix("UNetRes").unwrap_or(t)
}

impl UNet2DConditionModel {
    /// Builds the model of `config` on `weights` (a checkpoint, or untrained: torch's own
    /// initialisation, as diffusers' `from_config`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] / [`Error::ConfigField`] naming the field (see the module doc),
    /// a missing, misshaped or unread weight.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        config.check()?;
        let vb = weights.root();
        let c = &config;
        let n = c.block_out_channels.len();
        let act = Activation::from_name(CLASS, &c.act_fn)?;
        let c0 = c.block_out_channels[0];
        let time_embed_dim = c.time_embedding_dim.unwrap_or(4 * c0);
        let post = c
            .timestep_post_act
            .as_deref()
            .map(|a| Activation::from_name(CLASS, a))
            .transpose()?;
        let time_embed_act = c
            .time_embedding_act_fn
            .as_deref()
            .map(|a| Activation::from_name(CLASS, a))
            .transpose()?;
        let groups = c.norm_num_groups.unwrap_or(32);
        let resnet = |scale| ResnetSettings {
            temb_channels: time_embed_dim,
            eps: c.norm_eps,
            groups,
            act,
            time_embedding_norm: if c.resnet_time_scale_shift == "scale_shift" {
                TimeEmbeddingNorm::ScaleShift
            } else {
                TimeEmbeddingNorm::Default
            },
            skip_time_act: c.resnet_skip_time_act,
            output_scale_factor: scale,
        };
        if !matches!(
            c.resnet_time_scale_shift.as_str(),
            "default" | "scale_shift"
        ) {
            return Err(unsupported(format!(
                "resnet_time_scale_shift = {:?} (default or scale_shift)",
                c.resnet_time_scale_shift
            )));
        }
        let r = resnet(c.resnet_out_scale_factor);
        let heads = c.attention_head_dim.per_block(n, "attention_head_dim")?;
        let cross = c.cross_attention_dim.per_block(n, "cross_attention_dim")?;
        let layers = c.layers_per_block.per_block(n, "layers_per_block")?;
        let tlayers = c
            .transformer_layers_per_block
            .per_block(n, "transformer_layers_per_block")?;
        let only = c
            .only_cross_attention
            .per_block(n, "only_cross_attention")?;
        let settings = |i: usize, crossed: bool| {
            crossed.then_some(CrossAttnSettings {
                heads: heads[i],
                layers: tlayers[i].max(0) as usize,
                cross_attention_dim: cross[i],
                use_linear_projection: c.use_linear_projection,
                only_cross_attention: only[i],
            })
        };
        let pad = (c.conv_in_kernel - 1) / 2;
        let conv_in = Conv2d::load(
            &vb,
            "conv_in",
            (c.in_channels, c0),
            c.conv_in_kernel,
            (1, pad),
            true,
        )?;
        let mut down_blocks = Vec::new();
        let mut output = c0;
        for (i, t) in c.down_block_types.iter().enumerate() {
            let input = output;
            output = c.block_out_channels[i];
            let crossed = match block_type(t) {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => return Err(unsupported(format!("down block type {other:?}"))),
            };
            down_blocks.push(DownBlock::load(
                &vb,
                &format!("down_blocks.{i}"),
                BlockDims {
                    in_channels: input,
                    out_channels: output,
                    prev_output_channel: 0,
                    num_layers: layers[i].max(0) as usize,
                    add_sampler: i + 1 != n,
                    downsample_padding: c.downsample_padding,
                },
                r,
                settings(i, crossed),
            )?);
        }
        let last = c.block_out_channels[n - 1];
        let mid_block = match &c.mid_block_type {
            Some(_) => {
                let x = CrossAttnSettings {
                    heads: heads[n - 1],
                    layers: tlayers[n - 1].max(0) as usize,
                    cross_attention_dim: cross[n - 1],
                    use_linear_projection: c.use_linear_projection,
                    only_cross_attention: false,
                };
                Some(UNetMidBlock2DCrossAttn::load(
                    &vb,
                    last,
                    resnet(c.mid_block_scale_factor),
                    x,
                )?)
            }
            None => None,
        };
        let rev = |v: &[i64]| v.iter().rev().copied().collect::<Vec<i64>>();
        let rchannels = rev(&c.block_out_channels);
        let (rheads, rcross, rlayers, rtlayers) =
            (rev(&heads), rev(&cross), rev(&layers), rev(&tlayers));
        let ronly: Vec<bool> = only.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut output = rchannels[0];
        for (i, t) in c.up_block_types.iter().enumerate() {
            let prev = output;
            output = rchannels[i];
            let input = rchannels[(i + 1).min(n - 1)];
            let crossed = match block_type(t) {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                other => return Err(unsupported(format!("up block type {other:?}"))),
            };
            up_blocks.push(UpBlock::load(
                &vb,
                &format!("up_blocks.{i}"),
                BlockDims {
                    in_channels: input,
                    out_channels: output,
                    prev_output_channel: prev,
                    num_layers: rlayers[i].max(0) as usize + 1,
                    add_sampler: i + 1 != n,
                    downsample_padding: 0,
                },
                r,
                crossed.then_some(CrossAttnSettings {
                    heads: rheads[i],
                    layers: rtlayers[i].max(0) as usize,
                    cross_attention_dim: rcross[i],
                    use_linear_projection: c.use_linear_projection,
                    only_cross_attention: ronly[i],
                }),
            )?);
        }
        let out_pad = (c.conv_out_kernel - 1) / 2;
        let conv_norm_out = GroupNorm::load(&vb, "conv_norm_out", groups, c0, c.norm_eps)?;
        let conv_out = Conv2d::load(
            &vb,
            "conv_out",
            (c0, c.out_channels),
            c.conv_out_kernel,
            (1, out_pad),
            true,
        )?;
        let time_embedding =
            TimestepEmbedding::load(&vb.pp("time_embedding"), (c0, time_embed_dim), act, post)?;
        let time_proj = Timesteps::new(c0, c.flip_sin_to_cos, c.freq_shift);
        let params = weights.finish()?;
        Ok(Self {
            config,
            time_proj,
            time_embedding,
            time_embed_act,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_act: act,
            conv_out,
            params,
        })
    }

    /// The model of a config with untrained weights drawn from `seed` (torch's own
    /// initialisation), in `dtype`.
    ///
    /// # Errors
    /// As [`UNet2DConditionModel::new`].
    pub fn untrained(config: Config, seed: i64, dtype: tch::Kind) -> Result<Self> {
        let mut w = Weights::untrained(CLASS, seed, 0.02).with_dtype(dtype);
        Self::new(config, &mut w)
    }

    /// Loads a directory written by diffusers' `save_pretrained` (`config.json`,
    /// `diffusion_pytorch_model.safetensors`) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`UNet2DConditionModel::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, CLASS)?;
        Self::new(config, &mut weights)
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// diffusers' `forward_upsample_size`: whether the up blocks upsample to the skip states'
    /// sizes, true when the height or the width of `sample` is not a multiple of
    /// `2 ** num_upsamplers` (a decision on the sizes: a guard during an export).
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::StopIfStatic`] with `stop_if_static >= 2`.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward_upsample_size(&self, sample: &Tensor) -> CoreResult<bool> {
        let factor = self.config.overall_up_factor();
        for dim in &sample.shape()[2..] {
            if dim.modulo(factor).compare(Rel::Ne, 0)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The denoised sample `[batch, out_channels, height, width]` of `sample`
    /// `[batch, in_channels, height, width]` at `timestep` (0-D, `[1]` or `[batch]`), conditioned
    /// on `encoder_hidden_states` `[batch, length, cross_attention_dim]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_sample(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> CoreResult<Tensor> {
        let forward_upsample_size = self.forward_upsample_size(sample)?;
        let sample = if self.config.center_input_sample {
            sample.mul_scalar(2.0)?.sub_scalar(1.0)?
        } else {
            sample.clone()
        };
        // get_time_embed
        let timesteps = if timestep.rank() == 0 {
            timestep.unsqueeze(0)?
        } else {
            timestep.clone()
        };
        let timesteps = timesteps.expand(vec![sample.size(0)?])?;
        let t_emb = {
            let _s = scope("time_proj");
            self.time_proj.forward(&timesteps)?.to_kind(sample.kind())?
        };
        let mut emb = self.time_embedding.forward(&t_emb)?;
        if let Some(a) = self.time_embed_act {
            emb = a.forward(&emb)?;
        }
        let encoder = encoder_hidden_states;
        let mut sample = self.conv_in.forward(&sample)?;
        let mut res: Vec<Tensor> = vec![sample.clone()];
        for block in &self.down_blocks {
            let (h, states) = block.forward(&sample, &emb, encoder)?;
            sample = h;
            res.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            sample = mid.forward(&sample, &emb, encoder)?;
        }
        let n = self.up_blocks.len();
        for (i, block) in self.up_blocks.iter().enumerate() {
            let k = block.num_resnets();
            let skips = res.split_off(res.len() - k);
            let upsample_size = match res.last() {
                Some(s) if i + 1 != n && forward_upsample_size => {
                    let sh = s.shape();
                    Some([sh[2].clone(), sh[3].clone()])
                }
                _ => None,
            };
            sample = block.forward(&sample, &skips, &emb, encoder, upsample_size.as_ref())?;
        }
        let sample = self
            .conv_act
            .forward(&self.conv_norm_out.forward(&sample)?)?;
        self.conv_out.forward(&sample)
    }
}

impl Module for UNet2DConditionModel {
    fn class_name(&self) -> String {
        CLASS.to_owned()
    }

    /// diffusers' `UNet2DConditionModel.forward`, its first arguments.
    fn forward_signature(&self) -> Vec<String> {
        ["sample", "timestep", "encoder_hidden_states"]
            .map(str::to_owned)
            .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    /// `UNet2DConditionOutput(sample=...)`; `timestep` may be a tensor or a number (made a
    /// one-element tensor, int64 or float64 as diffusers makes it).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let sample = inputs.tensor("sample")?;
        let timestep = match inputs.get("timestep") {
            Value::Int(t) => {
                Tensor::from(tch::Tensor::from_slice(&[*t]).to_device(sample.device()))
            }
            Value::Float(t) => {
                Tensor::from(tch::Tensor::from_slice(&[*t]).to_device(sample.device()))
            }
            _ => inputs.tensor("timestep")?.clone(),
        };
        let out =
            self.forward_sample(sample, &timestep, inputs.tensor("encoder_hidden_states")?)?;
        Ok(Value::custom(UNet2DConditionOutput {
            sample: Some(Value::Tensor(out)),
        }))
    }
}
