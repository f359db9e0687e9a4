//! `Qwen2VLConfig` with its `text_config` (`Qwen2VLTextConfig`) and `vision_config`
//! (`Qwen2VLVisionConfig`), with the names and defaults of transformers 5.23's
//! `configuration_qwen2_vl.py`; and `Qwen2_5_VLConfig` (`configuration_qwen2_5_vl.py`: the
//! same text config, a vision config whose `hidden_size` is the tower's width and
//! `out_hidden_size` the merged features', with `intermediate_size`, `window_size` and
//! `fullatt_block_indexes`). Both vision configs are read into one [`VisionConfig`]:
//! `embed_dim` the tower's width, `hidden_size` the merged features' width.
//!
//! Both layouts of `config.json` are read: transformers 5 nests the text fields in
//! `text_config`; checkpoints saved by transformers 4 (the hub's Qwen2-VL configs) keep them
//! at the top level with `rope_scaling: {"type": "mrope", "mrope_section": [...]}`, which
//! `Qwen2VLTextConfig` turns into the `default` rope with the same sections, as here.
//! The text model is the Qwen2 decoder ([`llama::Config`] of [`Arch::Qwen2`]); its rope must
//! be `default` (`mrope`): another rope type is refused naming the field, as the multimodal
//! rotary embedding only recomposes the default frequencies.

use std::path::Path;

use serde::Deserialize;

use crate::{
    error::{Error, Result},
    models::llama,
};

/// The class name of Qwen2-VL, for errors.
pub(crate) const MODEL: &str = "Qwen2VLForConditionalGeneration";

/// The class name of Qwen2.5-VL.
pub(crate) const MODEL_2_5: &str = "Qwen2_5_VLForConditionalGeneration";

/// Which of the two families a config is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlArch {
    /// Qwen2-VL: LayerNorm, a GELU MLP, attention within each frame.
    #[default]
    Qwen2VL,
    /// Qwen2.5-VL: RMSNorm, a gated MLP, window attention but in `fullatt_block_indexes`.
    Qwen2_5VL,
}

impl VlArch {
    /// The transformers class.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Qwen2VL => MODEL,
            Self::Qwen2_5VL => MODEL_2_5,
        }
    }
}

fn d_depth() -> usize {
    32
}
fn d_embed_dim() -> i64 {
    1280
}
fn d_hidden_size() -> i64 {
    3584
}
fn d_act() -> String {
    "quick_gelu".to_owned()
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_num_heads() -> i64 {
    16
}
fn d_in_channels() -> i64 {
    3
}
fn d_patch_size() -> i64 {
    14
}
fn d_two() -> i64 {
    2
}
fn d_std() -> f64 {
    0.02
}

/// The rope of the vision tower (`axial`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct VisionRope {
    /// The base (10000).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `axial`, the only type `Qwen2VLVisionRotaryEmbedding` takes.
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// `Qwen2VLVisionConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    /// Vision blocks (`num_hidden_layers`).
    #[serde(default = "d_depth", alias = "num_hidden_layers")]
    pub depth: usize,
    /// Width of the vision blocks.
    #[serde(default = "d_embed_dim")]
    pub embed_dim: i64,
    /// Width of the merged features (the text model's hidden size).
    #[serde(default = "d_hidden_size")]
    pub hidden_size: i64,
    /// Activation of the vision MLP.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Inner size of the vision MLP over `embed_dim`.
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Vision heads (`num_attention_heads`).
    #[serde(default = "d_num_heads", alias = "num_attention_heads")]
    pub num_heads: i64,
    /// Image channels (`in_chans` in transformers 4 configs).
    #[serde(default = "d_in_channels", alias = "in_chans")]
    pub in_channels: i64,
    /// Side of a patch in pixels (transformers 4 configs repeat it as `spatial_patch_size`,
    /// which is not read).
    #[serde(default = "d_patch_size")]
    pub patch_size: i64,
    /// Side of the square of patches one merged feature covers.
    #[serde(default = "d_two")]
    pub spatial_merge_size: i64,
    /// Frames per patch.
    #[serde(default = "d_two")]
    pub temporal_patch_size: i64,
    /// Standard deviation of untrained weights.
    #[serde(default = "d_std")]
    pub initializer_range: f64,
    /// The axial rope.
    #[serde(default)]
    pub rope_parameters: Option<VisionRope>,
    /// Qwen2.5-VL: the inner size of the gated MLP (Qwen2-VL's is `embed_dim * mlp_ratio`).
    #[serde(default)]
    pub intermediate_size: Option<i64>,
    /// Qwen2.5-VL: the side of an attention window in pixels.
    #[serde(default)]
    pub window_size: Option<i64>,
    /// Qwen2.5-VL: the blocks attending over whole frames (the others, within windows); an
    /// index past the last block is no block, as in transformers (the reduced configs keep
    /// `[7, 15, 23, 31]` with 2 blocks).
    #[serde(default)]
    pub fullatt_block_indexes: Option<Vec<usize>>,
    /// The family.
    #[serde(skip)]
    pub arch: VlArch,
}

impl VisionConfig {
    /// The head size.
    pub fn head_dim(&self) -> i64 {
        self.embed_dim / self.num_heads
    }

    /// The base of the axial rope (10000 unless given).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .unwrap_or(10000.0)
    }

    /// The values of a flattened patch: `in_channels * temporal_patch_size * patch_size^2`.
    pub fn patch_values(&self) -> i64 {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// The window side in merged units (`window_size // spatial_merge_size // patch_size`),
    /// for Qwen2.5-VL.
    pub fn merger_window(&self) -> Option<i64> {
        self.window_size
            .map(|w| w / self.spatial_merge_size / self.patch_size)
    }

    fn validate(&self) -> Result<()> {
        let model = self.arch.class_name();
        let field = |name: &str, message: String| Error::ConfigField {
            model: model.to_owned(),
            field: format!("vision_config.{name}"),
            message,
        };
        if self.arch == VlArch::Qwen2_5VL && self.merger_window().is_none_or(|w| w < 1) {
            return Err(field(
                "window_size",
                format!(
                    "{:?}: a window must hold at least one merged unit \
                     (spatial_merge_size * patch_size = {} pixels)",
                    self.window_size,
                    self.spatial_merge_size * self.patch_size
                ),
            ));
        }
        for (name, v) in [
            ("depth", self.depth as i64),
            ("embed_dim", self.embed_dim),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("temporal_patch_size", self.temporal_patch_size),
        ] {
            if v < 1 {
                return Err(field(name, format!("{v}: must be at least 1")));
            }
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(field(
                "num_heads",
                format!(
                    "{} heads do not divide embed_dim={}",
                    self.num_heads, self.embed_dim
                ),
            ));
        }
        if self.head_dim() % 4 != 0 {
            return Err(field(
                "num_heads",
                format!(
                    "the head size {} is not a multiple of 4: the axial rope splits it into \
                     row and column halves of even size",
                    self.head_dim()
                ),
            ));
        }
        if let Some(kind) = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref())
            && kind != "axial"
        {
            return Err(field(
                "rope_parameters.rope_type",
                format!("{kind:?}: Qwen2VLVisionRotaryEmbedding supports only axial rope"),
            ));
        }
        crate::nn::Activation::from_name(model, &self.hidden_act)?;
        Ok(())
    }
}

/// The token ids and options of `Qwen2VLConfig` itself.
#[derive(Clone, Debug, Deserialize)]
struct Top {
    #[serde(default = "d_image_token")]
    image_token_id: i64,
    #[serde(default = "d_video_token")]
    video_token_id: i64,
    #[serde(default = "d_vision_start")]
    vision_start_token_id: i64,
    #[serde(default = "d_vision_end")]
    vision_end_token_id: i64,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn d_image_token() -> i64 {
    151_655
}
fn d_video_token() -> i64 {
    151_656
}
fn d_vision_start() -> i64 {
    151_652
}
fn d_vision_end() -> i64 {
    151_653
}

/// `Qwen2VLConfig`: the Qwen2 text decoder, the vision tower and the special tokens.
#[derive(Clone, Debug)]
pub struct Config {
    /// The text decoder (`Qwen2VLTextConfig`, as a Qwen2 config).
    pub text: llama::Config,
    /// The vision tower.
    pub vision: VisionConfig,
    /// `mrope_section`: the rotary frequencies given to the temporal, height and width
    /// positions, in that order (`[16, 24, 24]` unless given; they sum to half the head).
    pub mrope_section: Vec<i64>,
    /// The image placeholder token.
    pub image_token_id: i64,
    /// The video placeholder token.
    pub video_token_id: i64,
    /// The token opening an image.
    pub vision_start_token_id: i64,
    /// The token closing an image.
    pub vision_end_token_id: i64,
    /// `lm_head` shares the embedding weights.
    pub tie_word_embeddings: bool,
    /// The family.
    pub arch: VlArch,
}

/// `Qwen2_5_VLVisionConfig`'s defaults, before its names are mapped to [`VisionConfig`]'s.
const VISION_2_5_DEFAULTS: &[(&str, &str)] = &[
    ("depth", "32"),
    ("hidden_size", "3584"),
    ("hidden_act", "\"silu\""),
    ("intermediate_size", "3420"),
    ("num_heads", "16"),
    ("out_hidden_size", "3584"),
    ("window_size", "112"),
    ("fullatt_block_indexes", "[7, 15, 23, 31]"),
];

/// The vision config of `raw` (a `vision_config` object, maybe absent) in [`VisionConfig`]'s
/// names: Qwen2.5-VL's `hidden_size` is the tower's width (`embed_dim` here) and its
/// `out_hidden_size` the merged features' (`hidden_size` here).
fn vision_json(raw: Option<&serde_json::Value>, arch: VlArch) -> serde_json::Value {
    let mut v = match raw {
        Some(v) if v.is_object() => v.clone(),
        _ => serde_json::json!({}),
    };
    if arch == VlArch::Qwen2_5VL
        && let Some(obj) = v.as_object_mut()
    {
        for (k, d) in VISION_2_5_DEFAULTS {
            if obj.get(*k).is_none_or(serde_json::Value::is_null)
                && let Ok(d) = serde_json::from_str(d)
            {
                obj.insert((*k).to_owned(), d);
            }
        }
        let width = obj.remove("hidden_size");
        let out = obj.remove("out_hidden_size");
        obj.remove("embed_dim");
        if let Some(w) = width {
            obj.insert("embed_dim".to_owned(), w);
        }
        if let Some(o) = out {
            obj.insert("hidden_size".to_owned(), o);
        }
    }
    v
}

/// The defaults of `Qwen2VLTextConfig` where they differ from what [`llama::Config`] assumes.
const TEXT_DEFAULTS: &[(&str, f64)] = &[
    ("vocab_size", 152_064.0),
    ("hidden_size", 8192.0),
    ("intermediate_size", 29_568.0),
    ("num_hidden_layers", 80.0),
    ("num_attention_heads", 64.0),
    ("num_key_value_heads", 8.0),
    ("max_position_embeddings", 32_768.0),
    ("rms_norm_eps", 1e-5),
    ("max_window_layers", 80.0),
];

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::ConfigField`] naming the field.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`Config::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str());
        let class = raw.pointer("/architectures/0").and_then(|v| v.as_str());
        let arch = if model_type == Some("qwen2_5_vl") || class == Some(MODEL_2_5) {
            VlArch::Qwen2_5VL
        } else {
            VlArch::Qwen2VL
        };
        let model = arch.class_name();
        let top: Top = serde_path_to_error::deserialize(raw.clone())
            .map_err(|e| llama::parse_error(model, path, &e))?;
        let mut vision: VisionConfig =
            serde_path_to_error::deserialize(vision_json(raw.get("vision_config"), arch))
                .map_err(|e| llama::parse_error(model, path, &e))?;
        vision.arch = arch;
        vision.validate()?;
        // The text fields: `text_config`, or the top level of a transformers 4 config.
        let mut text = match raw.get("text_config") {
            Some(t) if t.is_object() => t.clone(),
            _ => raw.clone(),
        };
        let obj = text.as_object_mut().ok_or_else(|| Error::Config {
            path: path.to_owned(),
            message: "the config is not a JSON object".to_owned(),
        })?;
        for k in ["architectures", "vision_config", "text_config"] {
            obj.remove(k);
        }
        obj.insert("model_type".to_owned(), serde_json::json!("qwen2"));
        for (k, v) in TEXT_DEFAULTS {
            if obj.get(*k).is_none_or(serde_json::Value::is_null) {
                let value = if v.fract() == 0.0 && *v > 1.0 {
                    serde_json::json!(*v as i64)
                } else {
                    serde_json::json!(*v)
                };
                obj.insert((*k).to_owned(), value);
            }
        }
        // `rope_scaling` (transformers 4) or `rope_parameters`: `mrope` is the default rope
        // with sections; the base defaults to 1e6.
        let mut rope = obj
            .remove("rope_parameters")
            .filter(serde_json::Value::is_object)
            .or_else(|| {
                obj.remove("rope_scaling")
                    .filter(serde_json::Value::is_object)
            })
            .unwrap_or_else(|| serde_json::json!({}));
        let section = rope.get("mrope_section").cloned();
        let theta = rope
            .get("rope_theta")
            .and_then(serde_json::Value::as_f64)
            .or_else(|| obj.get("rope_theta").and_then(serde_json::Value::as_f64))
            .unwrap_or(1e6);
        let kind = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default")
            .to_owned();
        if kind != "default" && kind != "mrope" {
            return Err(Error::ConfigField {
                model: model.to_owned(),
                field: "text_config.rope_parameters.rope_type".to_owned(),
                message: format!(
                    "{kind:?}: the multimodal rotary embedding of Qwen2-VL recomposes the \
                     default frequencies only (default or mrope)"
                ),
            });
        }
        if let Some(r) = rope.as_object_mut() {
            r.clear();
            r.insert("rope_type".to_owned(), serde_json::json!("default"));
            r.insert("rope_theta".to_owned(), serde_json::json!(theta));
        }
        obj.insert("rope_parameters".to_owned(), rope);
        obj.insert("rope_theta".to_owned(), serde_json::json!(theta));
        let mut cfg = llama::Config::from_json(&text.to_string()).map_err(|e| match e {
            Error::Config { message, .. } => Error::Config {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        cfg.tie_word_embeddings = top.tie_word_embeddings || cfg.tie_word_embeddings;
        let mrope_section: Vec<i64> = match section {
            Some(s) => serde_json::from_value(s).map_err(|e| Error::ConfigField {
                model: model.to_owned(),
                field: "rope_parameters.mrope_section".to_owned(),
                message: format!("not a list of three integers: {e}"),
            })?,
            None => vec![16, 24, 24],
        };
        let half = cfg.head_size() / 2;
        if mrope_section.len() != 3
            || mrope_section.iter().any(|s| *s < 0)
            || mrope_section.iter().sum::<i64>() != half
        {
            return Err(Error::ConfigField {
                model: model.to_owned(),
                field: "rope_parameters.mrope_section".to_owned(),
                message: format!(
                    "{mrope_section:?}: three sizes (temporal, height, width) summing to half \
                     the head size, {half}"
                ),
            });
        }
        if vision.hidden_size != cfg.hidden_size {
            let name = match arch {
                VlArch::Qwen2VL => "vision_config.hidden_size",
                VlArch::Qwen2_5VL => "vision_config.out_hidden_size",
            };
            return Err(Error::ConfigField {
                model: model.to_owned(),
                field: name.to_owned(),
                message: format!(
                    "{}: the merged image features replace token embeddings of the text \
                     model's hidden_size {}",
                    vision.hidden_size, cfg.hidden_size
                ),
            });
        }
        Ok(Self {
            text: cfg,
            vision,
            mrope_section,
            image_token_id: top.image_token_id,
            video_token_id: top.video_token_id,
            vision_start_token_id: top.vision_start_token_id,
            vision_end_token_id: top.vision_end_token_id,
            tie_word_embeddings: top.tie_word_embeddings,
            arch,
        })
    }
}
