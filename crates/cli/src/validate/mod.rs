//! `onnx-diagnostic validate`: the pipeline of the Python package's `validate` — model (catalog
//! config with untrained weights, or a checkpoint directory), the text-generation input sets,
//! eager runs, export, the exported program checked against eager, lowering to ONNX, saving,
//! ONNX Runtime on every input set, discrepancies — summarised as `:key,value;` lines with the
//! Python package's key names.
//!
//! Decisions: the exit status is 0 only when every step ran and every discrepancy is within the
//! tolerance (1e-4 for float32, 3e-2 for float16, 2e-1 for bfloat16, or `--atol`; see
//! `default_atol`); without `-q` the first failing step stops the run
//! with its error; with `-q` a failing step becomes an `ERR_<step>` key and the summary is still
//! printed (the exit status stays non-zero). The export runs inside `torch_export_patches`
//! (transformers and diffusers patches on unless `--no-patch`; `--patch KEY=VALUE` sets the
//! guard's options `patch_torch`, `patch_transformers`, `patch_diffusers`); the eager runs do
//! not, as in the Python package. `export_patch` lists the patches applied. `--dtype` builds
//! the model in float32 and converts it with the cache inputs (the Python `model.to(dtype)`,
//! `to_any(inputs, dtype)`); a model ONNX Runtime cannot run in its type on the CPU (bfloat16)
//! is checked through its float32-emulating copy, said in `onnx_ort_emulated`.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use onnx_diagnostic_core::{
    ExportOptions, ExportedProgram, Inputs, Module, PatchOptions, Value, export,
    torch_export_patches,
};
use onnx_diagnostic_diffusers as diffusers;
use onnx_diagnostic_onnx::{
    ExternalData, LowerOptions, OnnxProgram, OrtError, Provider, emulate_in_float32_owned, lower,
    max_diff, passes, proto, read_model, save_model,
};
use onnx_diagnostic_transformers::{
    AutoConfig, AutoModel, TaskModel, catalog,
    tasks::{TextGenerationOptions, cast_floats, move_to},
    weights::Weights,
};

mod report;
mod tasks;

use report::{Summary, finish, memory_peak_mib, ms, step, suffix};
use tasks::{TASKS, describe_task, task_names};
pub use tasks::{TaskSets, task_sets};

/// Options of `validate`, named as the Python command names them.
#[derive(Args, Debug)]
pub(crate) struct ValidateArgs {
    /// Model id of the catalog (`arnir0/Tiny-LLM`) or a checkpoint directory.
    #[arg(short = 'm', long = "mid", visible_alias = "model")]
    model: Option<String>,
    /// Task (only `text-generation` so far).
    #[arg(short = 't', long)]
    task: Option<String>,
    /// Run the model (eager, exported, ONNX) and measure discrepancies.
    #[arg(long)]
    run: bool,
    /// What to export: `onnx` (also `onnx-dynamo`) or `export` (the ExportedProgram only).
    #[arg(long, value_parser = ["onnx", "onnx-dynamo", "export"])]
    export: Option<String>,
    /// ONNX clean-up: `default` or `none`.
    #[arg(long, default_value = "default", value_parser = ["default", "none", "ir"])]
    opt: String,
    /// Element type of the model and of the float inputs (the cache): the model is converted,
    /// as the Python validate does with `model.to(dtype)`. Without it, a catalog model is
    /// float32 and a checkpoint keeps its type (transformers' `dtype="auto"`).
    #[arg(long, value_parser = ["float32", "float16", "bfloat16"])]
    dtype: Option<String>,
    /// Device of the model, the inputs and ONNX Runtime: `cpu`, or `cuda` / `cuda:N` (libtorch
    /// must see the GPU, and ONNX Runtime must be the onnxruntime-gpu build).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Folder where the model, the inputs, the expected outputs and the summary are written.
    #[arg(short = 'o', long = "dump-folder")]
    dump: Option<PathBuf>,
    /// Apply the export patches (the default); `KEY=VALUE` sets an option of the guard
    /// (`patch_transformers=False`).
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    patch: Option<Vec<String>>,
    /// Do not apply the export patches.
    #[arg(long, conflicts_with = "patch")]
    no_patch: bool,
    /// Apply the control-flow rewritings the architecture needs (`code_needing_rewriting`),
    /// the default; needs the patches.
    #[arg(long, conflicts_with_all = ["no_rewrite", "no_patch"])]
    rewrite: bool,
    /// Do not apply the rewritings (they are also off with `--no-patch`).
    #[arg(long)]
    no_rewrite: bool,
    /// A plugin library whose patches and serializers the export uses (repeatable); a plugin's
    /// patch replaces a built-in patch of the same target.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
    /// 0: specialisations are guards; 1 or more: they are errors.
    #[arg(long, default_value_t = 0)]
    stop_if_static: u8,
    /// Opset of the ONNX model.
    #[arg(long, default_value_t = onnx_diagnostic_onnx::lower::DEFAULT_OPSET)]
    opset: i64,
    /// Largest allowed absolute discrepancy (by default 1e-4 for float32, 3e-2 for float16,
    /// 2e-1 for bfloat16).
    #[arg(long)]
    atol: Option<f64>,
    /// Verbosity.
    #[arg(short, long, default_value_t = 0)]
    verbose: u8,
    /// Report failing steps as ERR_* keys instead of stopping.
    #[arg(short, long)]
    quiet: bool,
    /// The increment of the second input set over the first (batch, sequence and cache each
    /// this much larger); 0 validates on `inputs` alone.
    #[arg(long, default_value_t = 1)]
    inputs2: i64,
    /// Model options: `KEY=VALUE` overriding the config (`num_hidden_layers=2`); the value is
    /// read as JSON when it parses (numbers, booleans, null), else as a string.
    #[arg(long = "mop", value_name = "KEY=VALUE")]
    mop: Vec<String>,
    /// Input options: `KEY=VALUE` setting the sizes of the input sets (`batch_size=3`,
    /// `sequence_length=30` for the cache, `sequence_length2=3` new tokens, `cls_cache=
    /// DynamicCache|StaticCache|HybridCache|SlidingWindowCache`, `max_cache_len` for the static
    /// ones), the keyword arguments of the Python package's `get_inputs`.
    #[arg(long = "iop", value_name = "KEY=VALUE")]
    iop: Vec<String>,
}

/// The input options of `--iop`, and their text as the Python summary prints a dict
/// (`{'batch_size': 3}`).
fn input_options(iop: &[String]) -> Result<(TextGenerationOptions, String)> {
    let mut o = TextGenerationOptions::default();
    let mut text = Vec::new();
    for kv in iop {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--iop {kv:?}: expected KEY=VALUE"))?;
        o.set(k, v)?;
        let shown = if v.parse::<i64>().is_ok() {
            v.to_owned()
        } else {
            format!("'{v}'")
        };
        text.push(format!("'{k}': {shown}"));
    }
    let text = if text.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", text.join(", "))
    };
    Ok((o, text))
}

/// The options of the patch guard around the export: transformers and diffusers patches unless
/// `--no-patch`, then the `--patch KEY=VALUE` settings, and the patches and serializers of the
/// `--plugin` libraries (loaded here: a library refused by the handshake stops the run).
fn patch_options(a: &ValidateArgs, arch: &str) -> Result<PatchOptions> {
    let plugins = onnx_diagnostic_plugins::load_all(&a.plugins)?;
    let mut o = PatchOptions {
        patch_transformers: true,
        patch_diffusers: true,
        patch: !a.no_patch,
        stop_if_static: a.stop_if_static,
        verbose: u8::from(a.verbose > 1),
        rewrite: if a.no_rewrite || a.no_patch {
            Vec::new()
        } else {
            rewrite_targets(arch)
        },
        // The Python validate's `dump_rewriting=os.path.join(dump_folder, "rewrite")`.
        dump_rewriting: a.dump.as_ref().map(|d| d.join("rewrite")),
        ..onnx_diagnostic_plugins::patch_options(&plugins)
    };
    for kv in a.patch.iter().flatten() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--patch {kv:?}: expected KEY=VALUE"))?;
        let on = match v {
            "1" | "True" | "true" => true,
            "0" | "False" | "false" => false,
            other => bail!("--patch {k}={other}: expected True or False"),
        };
        match k {
            "patch_torch" => o.patch_torch = on,
            "patch_transformers" => o.patch_transformers = on,
            "patch_diffusers" => o.patch_diffusers = on,
            "patch" => o.patch = on,
            other => bail!(
                "--patch {other}: unknown option (patch, patch_torch, patch_transformers, \
                 patch_diffusers)"
            ),
        }
    }
    Ok(o)
}

/// The methods the guard rewrites for `arch` (the seeds' `code_needing_rewriting`), named by
/// the struct that holds their code here (`PLBartEncoderLayer.forward` is
/// `BartEncoderLayer.forward`), each once.
pub(crate) fn rewrite_targets(arch: &str) -> Vec<String> {
    let shared = onnx_diagnostic_transformers::models::bart::shared_classes();
    let mut out: Vec<String> = Vec::new();
    for r in onnx_diagnostic_rewrite::code_needing_rewriting(arch) {
        let (class, method) = r.function.split_once('.').unwrap_or((&r.function, ""));
        let class = shared
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(class, |(_, s)| *s);
        let f = format!("{class}.{method}");
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The config text with `KEY=VALUE` overrides applied.
fn override_config(text: &str, mop: &[String]) -> Result<String> {
    if mop.is_empty() {
        return Ok(text.to_owned());
    }
    let mut json: serde_json::Value = serde_json::from_str(text)?;
    let obj = json
        .as_object_mut()
        .ok_or_else(|| anyhow!("the config is not a JSON object"))?;
    for kv in mop {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--mop {kv:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::json!(v));
        obj.insert(k.to_owned(), value);
    }
    Ok(serde_json::to_string(&json)?)
}

/// The libtorch device of a `--device` name; CUDA only when libtorch sees a GPU.
fn device_of(device: &str) -> Result<tch::Device> {
    let index = match device {
        "cpu" => return Ok(tch::Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    };
    load_torch_cuda()?;
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        bail!(
            "--device {device}: libtorch sees {count} CUDA device(s); run on a machine with an \
             NVIDIA GPU and its driver (the torch wheel of the set-up has CUDA), or use --device cpu"
        );
    }
    Ok(tch::Device::Cuda(index))
}

/// Loads libtorch's CUDA library (`libtorch_cuda.so`, beside `libtorch_cpu.so` in the torch
/// wheel): the binary links the CPU library only, and libtorch sees a GPU once the CUDA one has
/// registered itself, which its loading does. Loaded once, never unloaded.
fn load_torch_cuda() -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: libtorch_cuda.so is the CUDA half of the libtorch this binary runs on
            // (the same wheel, found through the binary's run path); its initialisers only
            // register CUDA with libtorch. The handle is leaked: the library stays loaded.
            #[allow(unsafe_code)]
            let lib = unsafe { libloading::Library::new("libtorch_cuda.so") };
            lib.map(std::mem::forget).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| {
            anyhow!(
                "--device cuda: cannot load libtorch_cuda.so ({e}); the torch wheel of the \
                 set-up has it in .venv/libs/torch/lib: run scripts/setup"
            )
        })
}

/// The default tolerance of a model type: 1e-4 in float32, 3e-2 in float16, 2e-1 in
/// bfloat16. A real-size model in a 16-bit type is only as exact as its own rounding, and two
/// executions of it (libtorch's kernels, ONNX Runtime's) each carry that error: the tolerance is
/// twice the type's own error on transformers' Llama-3.2-1B-shaped model (its float16 and
/// bfloat16 logits differ from float32's on the same weights by 0.014 and 0.116), to one
/// significant digit. Measured discrepancies: float16 0.012 (HuggingFaceTB/SmolLM3-3B's config
/// with 4 layers), bfloat16 0.103 (Qwen2.5-0.5B-shaped) and 0.145 (Llama-3.2-1B-shaped). Small
/// models stay far below (Tiny-LLM: 9.8e-4, 7.8e-3); `--atol` sets a tighter bound.
fn default_atol(dtype: tch::Kind) -> f64 {
    match dtype {
        tch::Kind::Half => 3e-2,
        tch::Kind::BFloat16 => 2e-1,
        _ => 1e-4,
    }
}

/// The libtorch type of a `--dtype` name.
fn kind_of(dtype: &str) -> Result<tch::Kind> {
    Ok(match dtype {
        "float32" => tch::Kind::Float,
        "float16" => tch::Kind::Half,
        "bfloat16" => tch::Kind::BFloat16,
        other => bail!("--dtype {other}: expected float32, float16 or bfloat16"),
    })
}

/// The model of a catalog id (its config, untrained weights from seed 42, in `dtype`) or of a
/// checkpoint directory (in the checkpoint's type unless `--dtype` asks one: transformers
/// 5.23's `from_pretrained(dtype="auto")`), built by the registry of
/// `onnx_diagnostic_transformers::auto`.
fn load_model(
    id: &str,
    mop: &[String],
    (dtype, device): (Option<tch::Kind>, tch::Device),
    s: &mut Summary,
) -> Result<Box<dyn TaskModel>> {
    let path = Path::new(id);
    let t = Instant::now();
    let (config_text, from_dir) = if path.is_dir() {
        let file = path.join("config.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (text, true)
    } else if let Some(text) =
        catalog::config_json(id).or_else(|| diffusers::catalog::config_json(id))
    {
        (text.to_owned(), false)
    } else {
        let mut ids = catalog::model_ids();
        ids.extend(diffusers::catalog::model_ids());
        bail!(
            "unknown model {id:?}: give a checkpoint directory or one of the catalog ids: {}",
            ids.join(", ")
        );
    };
    let config_text = override_config(&config_text, mop)?;
    let model = if diffusers::auto::is_diffusers_config(&config_text) {
        // A diffusers config (`_class_name`): its model, untrained with torch's own
        // initialisation as diffusers' `from_config` builds it.
        let class = diffusers::auto::class_name(&config_text).unwrap_or_default();
        let mut w = if from_dir {
            Weights::from_dir(path, &class)?.with_device(device)
        } else {
            Weights::untrained(&class, 42, 0.02)
                .with_dtype(dtype.unwrap_or(tch::Kind::Float))
                .with_device(device)
        };
        if let (true, Some(d)) = (from_dir, dtype) {
            w = w.with_dtype(d);
        }
        diffusers::auto::from_config_json(&config_text, &path.join("config.json"), &mut w)?
    } else {
        let config = AutoConfig::from_json(&config_text)?;
        if from_dir {
            let mut w = Weights::from_dir(path, config.class_name())?.with_device(device);
            if let Some(d) = dtype {
                w = w.with_dtype(d);
            }
            AutoModel::from_config(&config, &mut w)?
        } else {
            AutoModel::untrained(&config, 42, dtype.unwrap_or(tch::Kind::Float), device)?
        }
    };
    s.f("time_create_torch_model", ms(t));
    s.s("model_id", id);
    s.s("model_class", model.class_name());
    s.s(
        "model_source",
        if from_dir {
            "checkpoint"
        } else {
            "catalog, untrained (seed 42)"
        },
    );
    let params = model.named_parameters();
    let n: i64 = params.iter().map(|(_, t)| t.as_tch().numel() as i64).sum();
    let bytes: i64 = params
        .iter()
        .map(|(_, t)| (t.as_tch().numel() * t.kind().elt_size_in_bytes()) as i64)
        .sum();
    s.i("model_nweights", n);
    s.i("model_size", bytes);
    Ok(model)
}

fn write_safetensors(path: &Path, tensors: &[(String, tch::Tensor)]) -> Result<()> {
    // safetensors reads host memory, in row-major order (a sliding-window cache layer is a
    // view of a longer tensor).
    let host: Vec<tch::Tensor> = tensors
        .iter()
        .map(|(_, t)| t.to_device(tch::Device::Cpu).contiguous())
        .collect();
    let refs: Vec<(&str, &tch::Tensor)> = tensors
        .iter()
        .zip(&host)
        .map(|((n, _), t)| (n.as_str(), t))
        .collect();
    tch::Tensor::write_safetensors(&refs, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `validate` as described in the module doc.
pub(crate) fn validate(a: &ValidateArgs) -> Result<bool> {
    let Some(id) = &a.model else {
        if let Some(task) = &a.task {
            return describe_task(task).map(|()| true);
        }
        for (task, _) in TASKS {
            println!("{task}");
        }
        return Ok(true);
    };
    let asked = a.dtype.as_deref().map(kind_of).transpose()?;
    let device = device_of(&a.device)?;
    if let Some(task) = &a.task
        && !TASKS.iter().any(|(t, _)| t == task)
    {
        bail!("task {task} is not supported yet ({})", task_names());
    }
    // The cache and output classes cross the export boundary through their serializers,
    // registered for this run (what `torch_export_patches` does first in the Python package).
    let _serialization = onnx_diagnostic_serialization::register_cache_serialization(
        true,
        true,
        u8::from(a.verbose > 1),
    );
    let total = Instant::now();
    let mut s = Summary::default();
    s.s("version_onnx_diagnostic", env!("CARGO_PKG_VERSION"));
    s.i("version_opset", a.opset);
    s.s("version_dtype", a.dtype.clone().unwrap_or_default());
    s.s("version_device", &a.device);
    s.s("model_device", &a.device);
    s.s(
        "version_rewrite",
        if a.no_rewrite || a.no_patch {
            "False"
        } else {
            "True"
        },
    );
    let (iop, iop_text) = input_options(&a.iop)?;
    s.s("model_inputs_options", iop_text);
    let mut model = load_model(id, &a.mop, (asked, device), &mut s)?;
    // `-t TASK`, else the task the catalog id is published with, else the class's own.
    if let Some(task) = a
        .task
        .as_deref()
        .or_else(|| catalog::task(id))
        .or_else(|| diffusers::catalog::task(id))
    {
        model
            .set_task(task)
            .with_context(|| format!("-t {task} on {id}"))?;
    }
    s.s("model_task", model.task());
    // The type the model was built in: the one asked, or the checkpoint's.
    let dtype = model
        .named_parameters()
        .first()
        .map_or(tch::Kind::Float, |(_, t)| t.kind());
    let dtype_name = match dtype {
        tch::Kind::Half => "float16",
        tch::Kind::BFloat16 => "bfloat16",
        tch::Kind::Double => "float64",
        _ => "float32",
    };
    s.s("model_dtype", format!("torch.{dtype_name}"));
    let atol = a.atol.unwrap_or(default_atol(dtype));
    let arch = model.class_name();
    let sets: Vec<(&str, Vec<(String, Value)>)> = model
        .input_sets(&iop, a.inputs2)?
        .into_iter()
        .map(|(name, set)| Ok((name, move_to(&cast_floats(&set, dtype)?, device)?)))
        .collect::<Result<_>>()?;
    let shapes = model.dynamic_shapes(&iop);
    let prompt = model.prompt()?;
    let model: &dyn Module = model.as_ref();
    let show = onnx_diagnostic_core::StringTypeOptions::with_shape();
    if let Some((_, first)) = sets.first() {
        s.s(
            "model_inputs",
            onnx_diagnostic_core::string_type(&Value::Dict(first.clone()), &show),
        );
    }
    s.s(
        "model_shapes",
        onnx_diagnostic_core::string_dynamic_shapes(&shapes),
    );
    let mut ok = true;

    // The prompt set runs eagerly only, as in the Python validate (the exported model takes a
    // cache; a prompt needs a generation loop).
    {
        let prompt = move_to(&cast_floats(&prompt, dtype)?, device)?;
        model.forward(&Inputs::bind_for(model, &[], &prompt)?)?;
    }
    // Eager runs.
    let mut expected = Vec::new();
    for (name, set) in &sets {
        let t = Instant::now();
        let out = model.forward(&Inputs::bind_for(model, &[], set)?)?;
        if *name == "inputs" {
            s.f("time_run", ms(t));
        }
        expected.push(out);
    }
    if let Some(dir) = &a.dump {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let Some(kind) = &a.export else {
        s.f("time_total", ms(total));
        s.f("memory_peak", memory_peak_mib());
        s.print();
        return Ok(ok);
    };
    s.s(
        "export_exporter",
        if kind == "export" {
            "export"
        } else {
            "onnx-dynamo"
        },
    );
    s.i("version_stop_if_static", i64::from(a.stop_if_static));
    let patch_options = patch_options(a, &arch)?;
    let known = onnx_diagnostic_rewrite::code_needing_rewriting(&arch);
    if !known.is_empty() && !patch_options.rewrite.is_empty() {
        // The Python package's `model_rewrite`: the rewritings of the seeds' list, by class.
        let items: Vec<String> = known.iter().map(ToString::to_string).collect();
        s.s("model_rewrite", format!("[{}]", items.join(", ")));
    }
    s.s(
        "export_rewrite",
        if patch_options.rewrite.is_empty() {
            "none".to_owned()
        } else {
            patch_options.rewrite.join(",")
        },
    );
    let ds = shapes;
    let opts = ExportOptions {
        stop_if_static: a.stop_if_static,
    };
    let mut applied: Vec<String> = Vec::new();
    let ep: Option<ExportedProgram> = step(a.quiet, &mut s, "export_export", |s| {
        let t = Instant::now();
        let guard = torch_export_patches(patch_options)?;
        let ep = export(model, &[], &sets[0].1, Some(&ds), &opts);
        applied = guard
            .details()
            .patched
            .iter()
            .map(|p| p.name.clone())
            .collect();
        drop(guard);
        let ep = ep?;
        s.f("time_export_export", ms(t));
        s.i("export_graph_nodes", ep.graph().nodes.len() as i64);
        s.i("export_guards", ep.guards().len() as i64);
        Ok(ep)
    })?;
    s.s(
        "export_patch",
        if applied.is_empty() {
            "none".to_owned()
        } else {
            applied.join(",")
        },
    );
    let Some(ep) = ep else {
        s.print();
        return Ok(false);
    };
    if let Some(dir) = &a.dump {
        std::fs::write(dir.join("exported_program.txt"), ep.to_string())?;
        ep.save(&dir.join("exported_program.json"))?;
    }
    if a.run {
        for ((name, set), exp) in sets.iter().zip(&expected) {
            let r = step(
                a.quiet,
                &mut s,
                &format!("run_exported{}", suffix(name)),
                |_| Ok(ep.run(&[], set)?),
            )?;
            match r {
                Some(got) => {
                    let d = max_diff(exp, &got);
                    ok &= d.abs <= atol && d.dnan == 0.0;
                    s.diff(&format!("disc_exported{}", suffix(name)), &d);
                }
                None => ok = false,
            }
        }
    }
    if kind == "export" {
        s.f("time_total", ms(total));
        s.f("memory_peak", memory_peak_mib());
        finish(&s, a.dump.as_deref())?;
        return Ok(ok);
    }

    let model_proto: Option<proto::ModelProto> = step(a.quiet, &mut s, "export_onnx", |s| {
        let t = Instant::now();
        let m = lower(
            &ep,
            &LowerOptions {
                opset: a.opset,
                optimize: a.opt != "none",
                patches: applied.clone(),
            },
        )?;
        s.f("time_export_onnx", ms(t));
        Ok(m)
    })?;
    let Some(model_proto) = model_proto else {
        s.print();
        return Ok(false);
    };
    let empty = proto::GraphProto::default();
    let graph = model_proto.graph.as_ref().unwrap_or(&empty);
    let counts = passes::node_counts_with_subgraphs(graph);
    for (op, n) in &counts {
        s.i(&format!("n_node_{op}"), *n as i64);
    }
    s.i("n_node_nodes", counts.values().sum::<usize>() as i64);
    // Without -o, the model goes to a directory of this process only (two runs at once must
    // not overwrite each other's file), removed at the end.
    let scratch = a.dump.is_none().then(|| {
        std::env::temp_dir().join(format!("onnx-diagnostic-validate-{}", std::process::id()))
    });
    let _cleanup = scratch.clone().map(RemoveOnDrop);
    let dir = a.dump.clone().or(scratch).unwrap_or_default();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("model.onnx");
    let t = Instant::now();
    let external = external_for(&model_proto);
    let size = save_model(&model_proto, &path, external)?;
    s.f("time_onnx_save", ms(t));
    s.i("onnx_size", size as i64);

    // Inputs named as the ONNX inputs, expected outputs named as the ONNX outputs.
    if a.dump.is_some() {
        let out_names: Vec<String> = graph.output.iter().filter_map(|o| o.name.clone()).collect();
        for ((name, set), exp) in sets.iter().zip(&expected) {
            let mut feeds = Vec::new();
            for (k, v) in set {
                feeds.extend(v.flatten(k)?.0.into_iter().map(|(n, t)| (n, t.into_tch())));
            }
            write_safetensors(&dir.join(format!("{name}.safetensors")), &feeds)?;
            let outs: Vec<(String, tch::Tensor)> = out_names
                .iter()
                .cloned()
                .zip(exp.flatten("o")?.0.into_iter().map(|(_, t)| t.into_tch()))
                .collect();
            let file = format!(
                "expected{}.safetensors",
                name.strip_prefix("inputs").unwrap_or(name)
            );
            write_safetensors(&dir.join(file), &outs)?;
        }
    }

    // The file holds the model now: its copy in memory goes before ONNX Runtime loads its own
    // (for a model of 3.6 GB, 3.6 GB less at the peak).
    drop(model_proto);
    if a.run {
        let t = Instant::now();
        let session = step(a.quiet, &mut s, "onnx_ort_create", |s| {
            ort_session(&path, &ep, (dtype, device), s)
        })?;
        s.f("time_create_onnx_ort", ms(t));
        let Some(mut session) = session else {
            s.print();
            return Ok(false);
        };
        for ((name, set), exp) in sets.iter().zip(&expected) {
            let sfx = suffix(name);
            let t = Instant::now();
            let r = step(a.quiet, &mut s, &format!("onnx_ort_run{sfx}"), |_| {
                Ok(session.run(&[], set)?)
            })?;
            s.f(&format!("time_run_onnx_ort{sfx}"), ms(t));
            match r {
                Some(got) => {
                    let d = max_diff(exp, &got);
                    ok &= d.abs <= atol && d.dnan == 0.0;
                    s.diff(&format!("disc_onnx_ort_run{sfx}"), &d);
                }
                None => ok = false,
            }
        }
    }
    s.f("time_total", ms(total));
    s.f("memory_peak", memory_peak_mib());
    finish(&s, a.dump.as_deref())?;
    if !ok {
        return Err(anyhow!(
            "a step failed or a discrepancy exceeds {atol:e} (see the disc_* and ERR_* keys above)"
        ));
    }
    Ok(true)
}

/// The ONNX Runtime session of the saved model; when the runtime has no kernel for a node in
/// the model's type (bfloat16 on the CPU provider), a session of the checking copy computing
/// that type in float32 and rounding after each node (`emulate_in_float32`), said in the
/// `onnx_ort_emulated` key. The saved model is left as exported.
fn ort_session(
    path: &Path,
    ep: &ExportedProgram,
    (dtype, device): (tch::Kind, tch::Device),
    s: &mut Summary,
) -> Result<OnnxProgram> {
    // A GPU run needs ONNX Runtime's CUDA provider: its absence is an error naming the
    // providers the runtime has, never a silent CPU run.
    let provider = if device.is_cuda() {
        Provider::Cuda
    } else {
        Provider::Cpu
    };
    let missing = match OnnxProgram::from_file_on(path, ep, provider) {
        Err(OrtError::NoKernel { message, .. }) => message,
        other => return Ok(other?),
    };
    let low = match onnx_diagnostic_onnx::convert::data_type(dtype) {
        Some(t) if dtype != tch::Kind::Float => t,
        _ => bail!(
            "ONNX Runtime has no kernel for a node of {}: {missing}",
            path.display()
        ),
    };
    // The copy is rewritten from the model read back from its file (no second copy of the
    // weights), saved beside it with its weights in an external file when large, and loaded
    // from there (`model.emulated.onnx` in the dump folder).
    let model = read_model(path)?;
    let (copy, n) = emulate_in_float32_owned(model, low).context(missing.clone())?;
    s.s(
        "onnx_ort_emulated",
        format!(
            "{} computed in float32 and rounded after each of {n} nodes ({})",
            low.as_str_name().to_lowercase(),
            missing.replace([';', '\n'], " ")
        ),
    );
    let emulated = path.with_file_name("model.emulated.onnx");
    save_model(&copy, &emulated, external_for(&copy))?;
    drop(copy);
    // ONNX Runtime's optimizations would fold the weights' casts into float32 copies at session
    // creation (twice the bfloat16 weights, and most of the session's time): the checking copy
    // runs as written, casting at each run.
    Ok(OnnxProgram::from_file_unoptimized_on(
        &emulated, ep, provider,
    )?)
}

/// External data (initializers of 1 KiB or more in `<file>.data`) once the initializers pass
/// 1 GiB: protobuf cannot hold 2 GiB, and ONNX Runtime reads an external file without a
/// second in-memory copy of the serialized model.
fn external_for(model: &proto::ModelProto) -> ExternalData {
    let bytes: usize = model
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .map(|t| t.raw_data.as_ref().map_or(0, Vec::len))
        .sum();
    if bytes > 1 << 30 {
        ExternalData::Above(1024)
    } else {
        ExternalData::Never
    }
}

/// Removes a scratch directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
