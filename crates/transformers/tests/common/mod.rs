//! Helpers of the parity tests: the transformers reference and tensor comparisons.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::{collections::HashMap, path::PathBuf, process::Command};

use onnx_diagnostic_core::{ExportOptions, Inputs, Module, Tensor, export};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff, proto};
use onnx_diagnostic_transformers::DynamicCache;
use onnx_diagnostic_transformers::tasks::{
    DecoderDims, INPUT_SETS, TextGenerationOptions, cast_floats, text_generation_dynamic_shapes,
    text_generation_inputs,
};
use tch::Kind;

/// Runs `tests/parity/make_reference.py` on `config` (in `<target tmp>/parity/<name>`): the
/// checkpoint directory and the reference tensors.
pub(crate) fn reference(name: &str, config: &str) -> (PathBuf, HashMap<String, tch::Tensor>) {
    reference_in(name, config, None)
}

/// [`reference`] with transformers' model converted to `dtype` (`float16`, `bfloat16`) before
/// it runs; the checkpoint stays float32.
pub(crate) fn reference_in(
    name: &str,
    config: &str,
    dtype: Option<&str>,
) -> (PathBuf, HashMap<String, tch::Tensor>) {
    let args: Vec<String> = dtype.map(|d| format!("--dtype={d}")).into_iter().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    reference_with(name, config, &args)
}

/// [`reference`] with options of make_reference.py (`--checkpoint-dtype=bfloat16`,
/// `--max-shard-size=20KB`, `--dtype=float16`).
pub(crate) fn reference_with(
    name: &str,
    config: &str,
    options: &[&str],
) -> (PathBuf, HashMap<String, tch::Tensor>) {
    run_reference("make_reference.py", "parity", name, config, options)
}

/// Runs `tests/parity/<script>` on `config` with `options` (in `<target tmp>/<group>/<name>`):
/// the checkpoint directory it writes and its `io.safetensors` tensors.
pub(crate) fn run_reference(
    script: &str,
    group: &str,
    name: &str,
    config: &str,
    options: &[&str],
) -> (PathBuf, HashMap<String, tch::Tensor>) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("input_config.json");
    std::fs::write(&cfg, config).unwrap();
    let out = root.join("checkpoint");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(manifest.join("../../.venv/bin/python"));
    command
        .arg(manifest.join("tests/parity").join(script))
        .arg(&out)
        .arg(&cfg);
    command.args(options);
    let status = command.output().expect("the venv's python runs");
    assert!(
        status.status.success(),
        "{script} failed for {name}:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let io = tch::Tensor::read_safetensors(out.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    (out, io)
}

/// Largest absolute difference (shapes must match).
pub(crate) fn diff(a: &Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.concrete_shape(), b.size());
    assert_eq!(a.kind(), b.kind(), "element types differ");
    (a.as_tch() - b).abs().max().double_value(&[])
}

/// A reference tensor by name.
pub(crate) fn t(io: &HashMap<String, tch::Tensor>, k: &str) -> Tensor {
    Tensor::from(
        io.get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .shallow_clone(),
    )
}

/// Exports `model` on the text-generation `inputs` set with dynamic batch/sequence/cache,
/// lowers it, and checks ONNX Runtime against eager on the four validate input sets (≤ 1e-4, no
/// NaN). Returns the ONNX model.
pub(crate) fn export_and_check_in_ort(model: &dyn Module, dims: &DecoderDims) -> proto::ModelProto {
    export_and_check_in_ort_in(model, dims, Kind::Float, 1e-4).0
}

/// [`export_and_check_in_ort`] for a model in `dtype`, the cache of the input sets converted to
/// it, within `tol`. When ONNX Runtime has no kernel for `dtype` (bfloat16 on the CPU), the
/// float32-emulating copy runs instead. Returns the ONNX model and the largest discrepancy.
pub(crate) fn export_and_check_in_ort_in(
    model: &dyn Module,
    dims: &DecoderDims,
    dtype: Kind,
    tol: f64,
) -> (proto::ModelProto, f64) {
    let name = model.class_name();
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let ds = text_generation_dynamic_shapes(dims);
    let example = cast_floats(&text_generation_inputs(dims, 2, 3, 30).unwrap(), dtype).unwrap();
    let ep = export(model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap_or_else(|e| {
        // Only bfloat16 lacks kernels on the CPU provider.
        assert!(
            dtype == Kind::BFloat16 && matches!(e, onnx_diagnostic_onnx::OrtError::NoKernel { .. }),
            "{name}: {e}"
        );
        let low = onnx_diagnostic_onnx::convert::data_type(dtype).unwrap();
        let (copy, _) = onnx_diagnostic_onnx::emulate_in_float32(&onnx, low).unwrap();
        OnnxProgram::from_model(&copy, &ep).unwrap()
    });
    let mut worst = 0.0f64;
    for (set_name, (b, s, c)) in INPUT_SETS {
        let set = cast_floats(&text_generation_inputs(dims, *b, *s, *c).unwrap(), dtype).unwrap();
        let eager = model
            .forward(&Inputs::bind_for(model, &[], &set).unwrap())
            .unwrap();
        let d = max_diff(&eager, &session.run(&[], &set).unwrap());
        eprintln!(
            "{name} {set_name}: abs {:.3e} rel {:.3e} n {}",
            d.abs, d.rel, d.n
        );
        assert!(d.abs <= tol && d.dnan == 0.0, "{name} {set_name}: {d:?}");
        worst = worst.max(d.abs);
    }
    (onnx, worst)
}

/// Exports `model` on the first input set of `opts` (its cache class), lowers it, and checks
/// ONNX Runtime against eager on the four validate input sets of `opts` (≤ 1e-4, no NaN).
/// Returns the ONNX model.
pub(crate) fn export_and_check_with(
    model: &dyn Module,
    dims: &DecoderDims,
    opts: &TextGenerationOptions,
) -> proto::ModelProto {
    let name = model.class_name();
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    opts.check(dims, 1).unwrap();
    let sets = opts.input_sets(1);
    let ds = opts.dynamic_shapes(dims);
    let example = opts.inputs(dims, sets[0].1, 1).unwrap();
    let ep = export(model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for (set_name, sizes) in &sets {
        let set = opts.inputs(dims, *sizes, 1).unwrap();
        let eager = model
            .forward(&Inputs::bind_for(model, &[], &set).unwrap())
            .unwrap();
        let d = max_diff(&eager, &session.run(&[], &set).unwrap());
        eprintln!(
            "{name} {} {set_name} {sizes:?}: abs {:.3e} rel {:.3e} n {}",
            opts.cls_cache.class_name(),
            d.abs,
            d.rel,
            d.n
        );
        assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{name} {set_name}: {d:?}");
    }
    onnx
}

/// A model's cached forward: `(input_ids, attention_mask, cache) -> (logits, cache)`.
pub(crate) type Step<'a> =
    &'a dyn Fn(&Tensor, &Tensor, Option<DynamicCache>) -> (Tensor, DynamicCache);

/// `ours` (`[batch, heads, n, dim]`) against transformers' cache tensor: equal lengths, or, for
/// a sliding-window layer (`cropped`), transformers keeps only the last positions and those are
/// compared.
fn cache_diff(ours: &Tensor, theirs: &tch::Tensor, cropped: bool) -> f64 {
    let (n, m) = (ours.concrete_shape()[2], theirs.size()[2]);
    assert!(
        m == n || (cropped && m < n),
        "cache lengths: ours {n}, transformers {m}"
    );
    diff(&Tensor::from(ours.as_tch().narrow(2, n - m, m)), theirs)
}

fn check_cache(
    name: &str,
    cache: &DynamicCache,
    io: &HashMap<String, tch::Tensor>,
    suffix: &str,
    cropped: bool,
    tol: f64,
) {
    for (i, l) in cache.layers.iter().enumerate() {
        for (kind, t) in [("key", l.keys()), ("value", l.values())] {
            let theirs = &io[&format!("present_{kind}{suffix}_{i}")];
            let d = cache_diff(t.unwrap(), theirs, cropped);
            assert!(d <= tol, "{name}: {kind} {i}{suffix} differs by {d}");
        }
    }
}

/// The prompt step (no cache) then the cached step, against transformers' logits and cache
/// tensors (≤ 1e-4). Returns the prompt logits.
pub(crate) fn check_two_steps(
    name: &str,
    io: &HashMap<String, tch::Tensor>,
    step: Step<'_>,
    cropped: bool,
) -> Tensor {
    check_two_steps_within(name, io, step, cropped, 1e-4).0
}

/// [`check_two_steps`] within `tol`; returns the prompt logits and the largest logits
/// discrepancy of the two steps.
pub(crate) fn check_two_steps_within(
    name: &str,
    io: &HashMap<String, tch::Tensor>,
    step: Step<'_>,
    cropped: bool,
    tol: f64,
) -> (Tensor, f64) {
    let (logits, cache) = step(&t(io, "input_ids"), &t(io, "attention_mask"), None);
    let d1 = diff(&logits, &io["logits"]);
    assert!(d1 <= tol, "{name}: prompt logits differ by {d1}");
    check_cache(name, &cache, io, "", cropped, tol);
    let (next, cache) = step(
        &t(io, "input_ids_next"),
        &t(io, "attention_mask_next"),
        Some(cache),
    );
    let d2 = diff(&next, &io["logits_next"]);
    assert!(d2 <= tol, "{name}: cached-step logits differ by {d2}");
    check_cache(name, &cache, io, "_next", cropped, tol);
    (logits, d1.max(d2))
}

/// Runs `model` on the keyword inputs `set` and checks its `CausalLMOutputWithPast` against
/// the reference's `{name}.logits` and `{name}.out_key_{i}` / `{name}.out_value_{i}` (the
/// grown cache of `layers` layers), within 1e-4.
pub(crate) fn check_causal_lm_output(
    model: &dyn Module,
    set: &[(String, onnx_diagnostic_core::Value)],
    io: &HashMap<String, tch::Tensor>,
    name: &str,
    layers: usize,
) {
    use onnx_diagnostic_core::Value;
    use onnx_diagnostic_transformers::modeling_outputs::CausalLMOutputWithPast;
    let out = model
        .forward(&Inputs::bind_for(model, &[], set).unwrap())
        .unwrap();
    let out = out.downcast_ref::<CausalLMOutputWithPast>().unwrap();
    let Some(Value::Tensor(logits)) = &out.logits else {
        panic!("no logits")
    };
    let d = diff(logits, &io[&format!("{name}.logits")]);
    assert!(d <= 1e-4, "{name}: logits differ by {d}");
    let cache = out
        .past_key_values
        .as_ref()
        .and_then(|c| c.downcast_ref::<DynamicCache>())
        .unwrap();
    assert_eq!(cache.layers.len(), layers);
    for (i, layer) in cache.layers.iter().enumerate() {
        let dk = diff(layer.keys().unwrap(), &io[&format!("{name}.out_key_{i}")]);
        let dv = diff(
            layer.values().unwrap(),
            &io[&format!("{name}.out_value_{i}")],
        );
        assert!(dk <= 1e-4 && dv <= 1e-4, "{name} layer {i}: {dk} {dv}");
    }
}
