//! `onnx-diagnostic`: the command line of the workspace, as a library ([`main`]) so that a
//! program can embed it (the facade's feature `cli`) and a plugin's project can resolve its
//! dependencies as the binary does (README, "Plugins built on their own"); `src/main.rs` is
//! the binary.
//!
//! Commands:
//! - `validate`: export a model, run it in ONNX Runtime, report discrepancies (see `validate.rs`).
//! - `doctor`: checks that libtorch and ONNX Runtime load in this process and agree on a small
//!   computation, and prints where each library comes from.
//! - `caches`: the classes with a serializer, one per line, sorted (the list of seed `002`).
//! - `patches`: the registered patches as seed `002` lists them (`LlamaRotaryEmbedding:
//!   forward`), or their diffs (`--diff`, as seed `000` prints them).
//! - `rewrite`: the rewritings an architecture needs (`--known ARCH`, as seed `002` prints
//!   `code_needing_rewriting`), or the rewritten code and diff of any method of a Rust file.
//! - `plugin PATH`: what a plugin library declares (name, versions, patches, serializers), or
//!   why it is refused. `--plugin PATH` (repeatable) on `patches` and `validate` loads
//!   plugins whose patches and serializers are then listed and applied.

mod validate;

pub use validate::{TaskSets, task_sets};

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use onnx_diagnostic_onnx::{runtime, selfcheck};

#[derive(Parser)]
#[command(
    name = "onnx-diagnostic",
    version,
    about = "Export models to ONNX and diagnose the export"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks that libtorch and ONNX Runtime load and agree on `x + y`.
    Doctor,
    /// Exports a model, runs it with ONNX Runtime and reports discrepancies.
    Validate(Box<validate::ValidateArgs>),
    /// Lists the cache and output classes that have a serializer, one per line, sorted.
    Caches,
    /// Lists the patches (`Class: method, ...`), or prints their diffs.
    Patches {
        /// Only this family (torch, transformers, diffusers, custom, rewrite).
        #[arg(long)]
        family: Option<String>,
        /// Print the diff of each patch against its target.
        #[arg(long)]
        diff: bool,
        /// Format of the diffs.
        #[arg(long, default_value = "raw", value_parser = ["raw", "rst", "markdown"])]
        format: String,
        /// A plugin library whose patches are listed too (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<std::path::PathBuf>,
    },
    /// Prints what a plugin library declares, or why it is refused.
    Plugin {
        /// The library (`libmy_patches.so`).
        path: std::path::PathBuf,
    },
    /// Rewrites the control flow of a method (`FILE.rs --method Type::method`), or lists the
    /// rewritings an architecture needs (`--known ARCH`).
    Rewrite {
        /// A Rust source file.
        file: Option<std::path::PathBuf>,
        /// The method to rewrite, `Type::method`.
        #[arg(long)]
        method: Option<String>,
        /// Join `||`/`&&` between tensor tests into one test first (`or_into_bitor`).
        #[arg(long)]
        or_into_bitor: bool,
        /// The architecture (`BartForConditionalGeneration`) whose known rewritings to list.
        #[arg(long)]
        known: Option<String>,
    },
}

/// Runs the command line on the process's arguments: what the `onnx-diagnostic` binary does.
/// Errors are printed on stderr (`error: ...`) and give a failing exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => doctor(),
        Command::Patches {
            family,
            diff,
            format,
            plugins,
        } => list_patches(family.as_deref(), diff, &format, &plugins),
        Command::Plugin { path } => onnx_diagnostic_plugins::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|p| emit(&p.describe())),
        Command::Rewrite {
            file,
            method,
            or_into_bitor,
            known,
        } => rewrite(
            file.as_deref(),
            method.as_deref(),
            or_into_bitor,
            known.as_deref(),
        ),
        Command::Caches => {
            for class in onnx_diagnostic_serialization::supported_classes() {
                println!("{class}");
            }
            Ok(())
        }
        Command::Validate(args) => validate::validate(&args).and_then(|ok| {
            if ok {
                Ok(())
            } else {
                bail!("validation failed (see the summary)")
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `patches`: one line per class (`LlamaRotaryEmbedding: forward`), in registry order, or the
/// diffs.
fn list_patches(
    family: Option<&str>,
    diff: bool,
    format: &str,
    plugins: &[std::path::PathBuf],
) -> Result<()> {
    use onnx_diagnostic_core::patches::{AppliedPatch, DiffFormat, registered_patches};
    // Keep the patch crates' registrations linked.
    let _ = onnx_diagnostic_patch_torch::patches();
    let _ = onnx_diagnostic_patch_transformers::patches();
    let _ = onnx_diagnostic_patch_diffusers::patches();
    let plugins = onnx_diagnostic_plugins::load_all(plugins)?;
    let entries: Vec<_> = registered_patches()
        .into_iter()
        .filter(|p| family.is_none_or(|f| p.family.to_string() == f))
        .collect();
    let from_plugins: Vec<AppliedPatch> = plugins
        .iter()
        .flat_map(|p| p.applied_patches())
        .filter(|p| family.is_none_or(|f| p.family.to_string() == f))
        .collect();
    if diff {
        let format = match format {
            "rst" => DiffFormat::Rst,
            "markdown" => DiffFormat::Markdown,
            _ => DiffFormat::Raw,
        };
        let text: String = entries
            .into_iter()
            .map(AppliedPatch::from)
            .chain(from_plugins)
            .map(|a| format!("{}\n\n", a.format_diff(format)))
            .collect();
        return emit(&text);
    }
    let mut classes: Vec<(String, Vec<String>)> = Vec::new();
    for e in entries {
        let (class, method) = e.target.rsplit_once('.').unwrap_or((e.target, ""));
        match classes.iter_mut().find(|(c, _)| c == class) {
            Some((_, methods)) => methods.push(method.to_owned()),
            None => classes.push((class.to_owned(), vec![method.to_owned()])),
        }
    }
    let mut text = String::new();
    for (class, methods) in classes {
        if methods == [""] {
            // A free function (`infer_size`).
            text.push_str(&format!("{class}\n"));
            continue;
        }
        text.push_str(&format!("{class}: {}\n", methods.join(", ")));
        // The architectures sharing the struct share its patch, listed under their names as
        // the seeds list them.
        for (alias, shared) in onnx_diagnostic_patch_transformers::shared_classes() {
            if *shared == class {
                text.push_str(&format!("{alias}: {}\n", methods.join(", ")));
            }
        }
    }
    // A plugin's patches, one line each, with the plugin's name.
    for a in from_plugins {
        let plugin = a.plugin.as_deref().unwrap_or("?");
        match a.target.rsplit_once('.') {
            Some((class, method)) => {
                text.push_str(&format!("{class}: {method} (plugin {plugin})\n"));
            }
            None => text.push_str(&format!("{} (plugin {plugin})\n", a.target)),
        }
    }
    emit(&text)
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly instead of panicking.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// `rewrite`: see the module doc.
fn rewrite(
    file: Option<&std::path::Path>,
    method: Option<&str>,
    bitor: bool,
    known: Option<&str>,
) -> Result<()> {
    use onnx_diagnostic_rewrite as rw;
    if let Some(arch) = known {
        let list: Vec<String> = rw::code_needing_rewriting(arch)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut text = format!("[{}]\n", list.join(",\n "));
        // The rewritten methods of this build (registered by `#[rewritable]`), with their
        // diffs: what `validate` applies for the architecture.
        let registered = onnx_diagnostic_core::patches::registered_patches();
        for target in validate::rewrite_targets(arch) {
            if let Some(p) = registered.iter().find(|p| {
                p.family == onnx_diagnostic_core::patches::PatchFamily::Rewrite
                    && p.target == target
            }) {
                text.push_str(&format!(
                    "\n{} ({}):\n{}\n",
                    p.name,
                    p.target,
                    rw::unified_diff(p.target_source, p.patch_source)
                ));
            }
        }
        return emit(&text);
    }
    let (Some(file), Some(method)) = (file, method) else {
        bail!("give FILE.rs --method Type::method, or --known ARCH");
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let source = rw::find_method(&text, &file.display().to_string(), method)?;
    let options = rw::RewriteOptions {
        pre_rewriter: bitor.then_some(rw::or_into_bitor as rw::ItemRewriter),
        ..rw::RewriteOptions::default()
    };
    let r = rw::transform_method(&source, &options)?;
    if r.n_rewritten == 0 {
        bail!(
            "{method}: nothing to rewrite (no `if` testing a tensor with `.to_bool()`, no \
             `for` over a dynamic size `0..E.guard_int()?`)"
        );
    }
    emit(&format!("{}\n\n{}\n", r.code, r.diff))
}

/// The file of a shared library this process has mapped whose name starts with `stem` (read
/// from `/proc/self/maps`; `None` elsewhere or when it is not mapped).
fn loaded_library(stem: &str) -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(std::path::PathBuf::from)
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(stem) && n.contains(".so"))
        })
}

fn doctor() -> Result<()> {
    // libtorch is linked: the dynamic loader found it before `main` (LD_LIBRARY_PATH, then the
    // binary's run path: `$ORIGIN`, `$ORIGIN/../lib`, the checkout's `.venv`, then the
    // system). Print the file it mapped, not the build-time path.
    println!(
        "libtorch: {}",
        loaded_library("libtorch_cpu").map_or_else(
            || {
                format!(
                    "(not mapped; built against {})",
                    option_env!("LIBTORCH").unwrap_or("an unknown LIBTORCH")
                )
            },
            |p| p.display().to_string()
        )
    );
    let ort = runtime::runtime_library()?;
    println!("onnxruntime: {} ({})", ort.path.display(), ort.origin);
    let check = selfcheck::run()?;
    println!(
        "libtorch and ONNX Runtime agree on x + y: max abs diff {:e}",
        check.max_abs_diff
    );
    if check.max_abs_diff > 0.0 {
        bail!(
            "libtorch and ONNX Runtime disagree: {:?} vs {:?}",
            check.torch,
            check.onnxruntime
        );
    }
    Ok(())
}
