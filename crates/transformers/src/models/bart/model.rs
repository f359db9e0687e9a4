//! `BartModel` (`BartEncoder` and `BartDecoder` over the shared embeddings, the decoder's last
//! hidden state out) and the input handling its heads share.

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};
use tch::Kind;

use super::{BartDecoderLayer, BartEncoderLayer, Config, Family, LAYER_NORM_EPS, Positions};
use crate::{
    cache_utils::{EncoderDecoderCache, KeyPositions},
    error::{Error, Result, core_error},
    masking_utils::{causal_mask, finfo_min},
    modeling_outputs::{BaseModelOutput, Seq2SeqModelOutput},
    nn::{Embedding, LayerNorm},
    tasks::{
        TextGenerationOptions,
        feature_extraction::{encoder_dynamic_shapes, encoder_input_sets, encoder_inputs},
        text2text_generation::text2text_generation_prompt,
    },
    weights::{VarBuilder, Weights},
};

/// `BartModel` (and the base model of PLBart, Marian and BlenderbotSmall by their
/// [`Family`]): its output is the decoder's last hidden state, no head.
#[derive(Clone, Debug)]
pub struct BartModel {
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
    params: Vec<(String, Tensor)>,
}

/// What [`BartModel::run`] computes: the decoder's last hidden state, the grown cache and the
/// encoder's states.
pub(crate) type Run = (Tensor, EncoderDecoderCache, Tensor);

impl BartModel {
    /// Builds the base model from a config and the weights of a `BartModel` checkpoint
    /// (`shared.weight`, `encoder.*`, `decoder.*`).
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::UnusedWeights`] for
    /// checkpoint tensors no module reads (a `BartForConditionalGeneration` checkpoint, whose
    /// names start with `model.`, is one: build that class).
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let mut m = Self::load(config, weights, &weights.root())?;
        m.params = weights.finish()?;
        Ok(m)
    }

    /// The modules under `vb` (the root for `BartModel`, `model` for the heads); the caller
    /// ends the build.
    pub(crate) fn load(config: Config, weights: &Weights, vb: &VarBuilder<'_>) -> Result<Self> {
        let (v, d) = (config.vocab_size, config.d_model);
        let shared = Embedding::load(vb, "shared", v, d, config.pad_token_id)?;
        // Older checkpoints also save the tied copies; transformers ties them to `shared`.
        weights.ignore_unread("encoder.embed_tokens.weight");
        weights.ignore_unread("decoder.embed_tokens.weight");
        let enc = vb.pp("encoder");
        let dec = vb.pp("decoder");
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
            params: Vec::new(),
        })
    }

    /// Loads a `BartModel` checkpoint directory (`config.json` + safetensors) in the
    /// checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`BartModel::new`].
    pub fn from_pretrained(dir: &std::path::Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.family.base_class_name())?;
        Self::new(config, &mut weights)
    }

    /// The shared token embeddings `[vocab, d_model]` (the heads tie to them).
    pub(crate) fn shared_weight(&self) -> &Tensor {
        self.shared.weight()
    }

    pub(crate) fn model(&self) -> &'static str {
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

    /// `BartDecoder`: its last hidden state `[batch, target, d_model]` for
    /// `decoder_input_ids` after the positions `cache` holds, given the encoder's states;
    /// `cache` grows.
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
        let _s = scope("model.decoder");
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
        Ok(h)
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

    /// The forward of transformers' `BartModel` on keyword inputs (`input_ids`,
    /// `attention_mask`, `decoder_input_ids`, `decoder_attention_mask`, `encoder_outputs` as a
    /// `BaseModelOutput` or a tensor, `past_key_values` an `EncoderDecoderCache`): the encoder
    /// runs unless `encoder_outputs` gives its states, `decoder_input_ids` default to
    /// `input_ids` shifted right; `class` names the model in errors.
    pub(crate) fn run(&self, inputs: &Inputs, class: &str) -> CoreResult<Run> {
        let input = |path: &str, reason: String| {
            core_error(
                class,
                Error::Core(onnx_diagnostic_core::Error::Input {
                    path: path.to_owned(),
                    reason,
                }),
            )
        };
        let encoder_outputs = match inputs.get("encoder_outputs") {
            Value::None => None,
            Value::Tensor(t) => Some(t.clone()),
            v => match v.downcast_ref::<BaseModelOutput>() {
                Some(o) => match &o.last_hidden_state {
                    Some(Value::Tensor(t)) => Some(t.clone()),
                    _ => None,
                },
                None => {
                    return Err(input(
                        "encoder_outputs",
                        format!(
                            "expected a BaseModelOutput or a tensor, got {}",
                            v.kind_name()
                        ),
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
                        input(
                            "past_key_values",
                            format!(
                                "expected an EncoderDecoderCache or None, got {}",
                                v.kind_name()
                            ),
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
                return Err(input(
                    "input_ids",
                    "give input_ids or encoder_outputs".to_owned(),
                ));
            }
        };
        let decoder_input_ids = match inputs.opt_tensor("decoder_input_ids")? {
            Some(d) => d.clone(),
            None => match input_ids {
                Some(ids) => self.shift_tokens_right(ids)?,
                None => {
                    return Err(input(
                        "decoder_input_ids",
                        "give decoder_input_ids (or input_ids to shift)".to_owned(),
                    ));
                }
            },
        };
        let mut cache = cache.unwrap_or_default();
        let h = self.decode(
            &decoder_input_ids,
            decoder_attention_mask,
            &encoder,
            attention_mask,
            &mut cache,
        )?;
        Ok((h, cache, encoder))
    }
}

/// transformers' `forward` arguments of the encoder-decoders, the first ones.
pub(crate) fn forward_signature() -> Vec<String> {
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

impl Module for BartModel {
    fn class_name(&self) -> String {
        self.config.family.base_class_name().to_owned()
    }

    /// transformers' `BartModel.forward`, its first arguments.
    fn forward_signature(&self) -> Vec<String> {
        forward_signature()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    /// `Seq2SeqModelOutput` with `last_hidden_state`, `past_key_values` (an
    /// `EncoderDecoderCache`) and `encoder_last_hidden_state`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let (h, cache, encoder) = self.run(inputs, self.config.family.base_class_name())?;
        Ok(Value::custom(Seq2SeqModelOutput {
            last_hidden_state: Some(Value::Tensor(h)),
            past_key_values: Some(Value::custom(cache)),
            encoder_last_hidden_state: Some(Value::Tensor(encoder)),
            ..Seq2SeqModelOutput::default()
        }))
    }
}

impl crate::auto::TaskModel for BartModel {
    /// `feature-extraction`, the task of transformers' base models.
    fn task(&self) -> &'static str {
        "feature-extraction"
    }

    fn input_sets(
        &self,
        options: &TextGenerationOptions,
        increment: i64,
    ) -> Result<crate::auto::InputSets> {
        encoder_task_sets(&self.config, options, increment)
    }

    fn dynamic_shapes(
        &self,
        _options: &TextGenerationOptions,
    ) -> onnx_diagnostic_core::DynamicShapes {
        encoder_dynamic_shapes(&self.config.seq2seq_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        tch::manual_seed(0);
        text2text_generation_prompt(&self.config.seq2seq_dims())
    }
}

/// The feature-extraction / summarization input sets of `config`'s model.
pub(crate) fn encoder_task_sets(
    config: &Config,
    options: &TextGenerationOptions,
    increment: i64,
) -> Result<crate::auto::InputSets> {
    let dims = config.seq2seq_dims();
    encoder_input_sets(options, increment)?
        .into_iter()
        .map(|(name, sizes)| {
            tch::manual_seed(0);
            Ok((name, encoder_inputs(&dims, sizes)?))
        })
        .collect()
}
