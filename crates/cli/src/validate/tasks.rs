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

/// The input sets `validate -t TASK` describes: the task's catalog model (untrained, seed 42),
/// its named sets of the default options with the second set grown by one, `inputs_prompt`
/// last, and their dynamic shapes.
pub struct TaskSets {
    /// The catalog id of the model the sets are made for.
    pub model_id: &'static str,
    /// `(name, keyword inputs)`, `inputs_prompt` last.
    pub sets: Vec<(String, Vec<(String, Value)>)>,
    /// The dynamic shapes of the exported sets (not of `inputs_prompt`).
    pub dynamic_shapes: onnx_diagnostic_core::DynamicShapes,
}

/// The input sets of `task` on its catalog model ([`TaskSets`]).
///
/// # Errors
/// A task `validate` does not run (naming those it runs), or an error building the model or
/// its sets.
pub fn task_sets(task: &str) -> Result<TaskSets> {
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
    let options = TextGenerationOptions::default();
    let mut sets: Vec<(String, Vec<(String, Value)>)> = model
        .input_sets(&options, 1)?
        .into_iter()
        .map(|(name, set)| (name.to_owned(), set))
        .collect();
    sets.push(("inputs_prompt".to_owned(), model.prompt()?));
    Ok(TaskSets {
        model_id: id,
        sets,
        dynamic_shapes: model.dynamic_shapes(&options),
    })
}

/// `-t TASK` without a model: the inputs of the task (on a small catalog model, untrained) and
/// their dynamic shapes, printed by `string_type` with shapes.
pub(super) fn describe_task(task: &str) -> Result<()> {
    let described = task_sets(task)?;
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let opts = onnx_diagnostic_core::StringTypeOptions::with_shape();
    for (name, set) in described.sets {
        let set = Value::Dict(set);
        println!("{name}: {}", onnx_diagnostic_core::string_type(&set, &opts));
    }
    println!(
        "dynamic_shapes: {}",
        onnx_diagnostic_core::string_dynamic_shapes(&described.dynamic_shapes)
    );
    Ok(())
}
