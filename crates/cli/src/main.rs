//! `onnx-diagnostic`: the command line of the workspace.
//!
//! Commands:
//! - `validate`: export a model, run it in ONNX Runtime, report discrepancies (see `validate.rs`).
//! - `doctor`: checks that libtorch and ONNX Runtime load in this process and agree on a small
//!   computation, and prints where each library comes from.
//! - `caches`: the classes with a serializer, one per line, sorted (the list of seed `002`).

mod validate;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => doctor(),
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

fn doctor() -> Result<()> {
    println!(
        "libtorch: {}",
        option_env!("LIBTORCH").unwrap_or("(LIBTORCH was not set at build time)")
    );
    println!(
        "onnxruntime: {}",
        runtime::runtime_library_path()
            .map_or_else(|| "(not found)".to_owned(), |p| p.display().to_string())
    );
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
