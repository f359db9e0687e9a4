//! `BartForConditionalGeneration` (PLBart's, Marian's and BlenderbotSmall's generation models
//! by their [`Family`]): [`BartModel`] under `model.`, then `lm_head` (tied to `shared`) plus
//! `final_logits_bias`.

use std::path::Path;

use onnx_diagnostic_core::{
    DynamicShapes, Inputs, Module, Result as CoreResult, Tensor, Value, scope,
};

use super::{
    Config,
    model::{BartModel, encoder_task_sets, forward_signature},
};
use crate::{
    cache_utils::EncoderDecoderCache,
    error::{Error, Result},
    modeling_outputs::Seq2SeqLMOutput,
    tasks::{
        TextGenerationOptions,
        feature_extraction::encoder_dynamic_shapes,
        text2text_generation::{
            text2text_generation_dynamic_shapes, text2text_generation_inputs,
            text2text_generation_prompt, text2text_input_sets,
        },
    },
    weights::{Init, Weights},
};

/// The tasks a generation model takes: `text2text-generation` (the default, with
/// `decoder_input_ids`), `summarization` (the source only, the Python package's sets for
/// facebook/bart-large-cnn).
const TASKS: &[&str] = &["text2text-generation", "summarization"];

/// `BartForConditionalGeneration`.
#[derive(Clone, Debug)]
pub struct BartForConditionalGeneration {
    /// The configuration.
    pub config: Config,
    model: BartModel,
    lm_head: Tensor,
    final_logits_bias: Tensor,
    params: Vec<(String, Tensor)>,
    task: &'static str,
}

impl BartForConditionalGeneration {
    /// Builds the model from a config and weights.
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::UnusedWeights`] for
    /// checkpoint tensors no module reads.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let vb = weights.root();
        let model = BartModel::load(config.clone(), &*weights, &vb.pp("model"))?;
        let d = config.d_model;
        let lm_head = if config.tie_word_embeddings {
            weights.ignore_unread("lm_head.weight");
            model.shared_weight().clone()
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
        Ok(Self {
            config,
            model,
            lm_head,
            final_logits_bias,
            params,
            task: TASKS[0],
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

    /// `BartEncoder`: the encoder's last hidden state `[batch, source, d_model]`.
    ///
    /// # Errors
    /// Any error of the ops (the float16 clamp's test during an export).
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        self.model.encode(input_ids, attention_mask)
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
        let h = self.model.decode(
            decoder_input_ids,
            decoder_attention_mask,
            encoder,
            attention_mask,
            cache,
        )?;
        self.head(&h)
    }

    fn head(&self, h: &Tensor) -> CoreResult<Tensor> {
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

    /// `shift_tokens_right` (see [`BartModel::shift_tokens_right`]).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn shift_tokens_right(&self, labels: &Tensor) -> CoreResult<Tensor> {
        self.model.shift_tokens_right(labels)
    }
}

impl crate::auto::TaskModel for BartForConditionalGeneration {
    fn task(&self) -> &'static str {
        self.task
    }

    fn tasks(&self) -> &'static [&'static str] {
        TASKS
    }

    fn set_task(&mut self, task: &str) -> Result<()> {
        self.task =
            TASKS
                .iter()
                .copied()
                .find(|t| *t == task)
                .ok_or_else(|| Error::UnsupportedTask {
                    model: self.model.model().to_owned(),
                    task: task.to_owned(),
                    supported: TASKS.join(", "),
                })?;
        Ok(())
    }

    fn input_sets(
        &self,
        options: &TextGenerationOptions,
        increment: i64,
    ) -> Result<crate::auto::InputSets> {
        if self.task == "summarization" {
            return encoder_task_sets(&self.config, options, increment);
        }
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
        if self.task == "summarization" {
            return encoder_dynamic_shapes(&self.config.seq2seq_dims());
        }
        text2text_generation_dynamic_shapes(&self.config.seq2seq_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        tch::manual_seed(0);
        text2text_generation_prompt(&self.config.seq2seq_dims())
    }
}

impl Module for BartForConditionalGeneration {
    fn class_name(&self) -> String {
        self.model.model().to_owned()
    }

    /// transformers' `BartForConditionalGeneration.forward`, its first arguments.
    fn forward_signature(&self) -> Vec<String> {
        forward_signature()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    /// `Seq2SeqLMOutput` with `logits`, `past_key_values` (an `EncoderDecoderCache`) and
    /// `encoder_last_hidden_state`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let (h, cache, encoder) = self.model.run(inputs, self.model.model())?;
        let logits = self.head(&h)?;
        Ok(Value::custom(Seq2SeqLMOutput {
            logits: Some(Value::Tensor(logits)),
            past_key_values: Some(Value::custom(cache)),
            encoder_last_hidden_state: Some(Value::Tensor(encoder)),
            ..Seq2SeqLMOutput::default()
        }))
    }
}
