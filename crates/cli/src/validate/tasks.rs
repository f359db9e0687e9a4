//! The tasks `validate` runs and `-t TASK` without a model: the input sets of a task described
//! on a small catalog model.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use onnx_diagnostic_core::Value;
use onnx_diagnostic_diffusers as diffusers;
use onnx_diagnostic_transformers::{
    AutoConfig, AutoModel, catalog, tasks::TextGenerationOptions, weights::Weights,
};

/// The tasks `validate` runs, with the catalog model `-t TASK` describes them on.
pub(super) const TASKS: &[(&str, &str)] = &[
    ("text-generation", "arnir0/Tiny-LLM"),
    (
        "text2text-generation",
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration",
    ),
    ("feature-extraction", "facebook/bart-base"),
    (
        "summarization",
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration",
    ),
    ("text-to-image", "diffusers/tiny-torch-full-checker/unet"),
    ("image-text-to-text", "tiny-random/qwen2-vl"),
    ("mask-generation", "fxmarty/sam-vit-tiny-random"),
];

pub(super) fn task_names() -> String {
    TASKS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
}

/// `-t TASK` without a model: the inputs of the task (on a small catalog model, untrained) and
/// their dynamic shapes.
pub(super) fn describe_task(task: &str) -> Result<()> {
    let Some((_, id)) = TASKS.iter().find(|(t, _)| *t == task) else {
        bail!("task {task} is not supported yet ({})", task_names());
    };
    let mut model = if let Some(text) = diffusers::catalog::config_json(id) {
        let mut w = Weights::untrained("UNet2DConditionModel", 42, 0.02);
        diffusers::auto::from_config_json(text, Path::new(id), &mut w)?
    } else {
        let config = AutoConfig::from_json(
            catalog::config_json(id).ok_or_else(|| anyhow!("{id} is not in the catalog"))?,
        )?;
        AutoModel::untrained(&config, 42, tch::Kind::Float, tch::Device::Cpu)?
    };
    model.set_task(task)?;
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let opts = onnx_diagnostic_core::StringTypeOptions::with_shape();
    let options = TextGenerationOptions::default();
    for (name, set) in model.input_sets(&options, 1)? {
        let set = Value::Dict(set);
        println!("{name}: {}", onnx_diagnostic_core::string_type(&set, &opts));
    }
    let prompt = Value::Dict(model.prompt()?);
    println!(
        "inputs_prompt: {}",
        onnx_diagnostic_core::string_type(&prompt, &opts)
    );
    println!(
        "dynamic_shapes: {}",
        onnx_diagnostic_core::string_dynamic_shapes(&model.dynamic_shapes(&options))
    );
    Ok(())
}
