//! The report of `validate`: the summary (`:key,value;` lines and `summary.json`, the Python
//! package's key names and number format), the steps that become `ERR_<step>` keys with `-q`,
//! and their progress spinner.

use std::{collections::BTreeMap, fmt, path::Path, time::Instant};

use anyhow::Result;
use onnx_diagnostic_core::helpers::py_float;
use onnx_diagnostic_onnx::Diff;

/// A value of the summary.
#[derive(Clone, Debug)]
pub(super) enum V {
    S(String),
    F(f64),
    I(i64),
}

impl fmt::Display for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V::S(s) => f.write_str(s),
            V::F(x) => f.write_str(&py_float(*x)),
            V::I(x) => write!(f, "{x}"),
        }
    }
}

#[derive(Default)]
pub(super) struct Summary(BTreeMap<String, V>);

impl Summary {
    pub(super) fn s(&mut self, k: &str, v: impl Into<String>) {
        self.0.insert(k.to_owned(), V::S(v.into()));
    }
    pub(super) fn f(&mut self, k: &str, v: f64) {
        self.0.insert(k.to_owned(), V::F(v));
    }
    pub(super) fn i(&mut self, k: &str, v: i64) {
        self.0.insert(k.to_owned(), V::I(v));
    }
    pub(super) fn diff(&mut self, prefix: &str, d: &Diff) {
        self.f(&format!("{prefix}_abs"), d.abs);
        self.f(&format!("{prefix}_rel"), d.rel);
        self.f(&format!("{prefix}_sum"), d.sum);
        self.f(&format!("{prefix}_n"), d.n);
        self.f(&format!("{prefix}_dnan"), d.dnan);
    }
    pub(super) fn print(&self) {
        println!("-- summary --");
        for (k, v) in &self.0 {
            println!(":{k},{v};");
        }
    }
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        V::S(s) => serde_json::json!(s),
                        V::F(x) if x.is_finite() => serde_json::json!(x),
                        V::F(x) => serde_json::json!(x.to_string()),
                        V::I(x) => serde_json::json!(x),
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    }
}

/// The suffix of an input set in the discrepancy keys, as the Python package names them.
pub(super) fn suffix(set: &str) -> &'static str {
    match set {
        "inputs" => "",
        "inputs2" => "22",
        "inputs_empty_cache" => "2_empty_cache",
        "inputs_batch1" => "2_batch1",
        "inputs_resolution" => "2_resolution",
        "inputs_odd_resolution" => "2_odd_resolution",
        "inputs_images" => "2_images",
        "inputs_points" => "2_points",
        "inputs_long" => "2_long",
        _ => "_other",
    }
}

/// The peak resident memory of the process so far, in MiB (`VmHWM` of `/proc/self/status`;
/// the unit of the Python package's `memory_peak` helper); -1 where the kernel does not say.
pub(super) fn memory_peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(-1.0, |kb| kb / 1024.0)
}

pub(super) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Runs `step`; with `-q` a failure becomes `ERR_<name>` and `None`.
pub(super) fn step<T>(
    q: bool,
    s: &mut Summary,
    name: &str,
    f: impl FnOnce(&mut Summary) -> Result<T>,
) -> Result<Option<T>> {
    let _progress = Progress::start(name);
    match f(s) {
        Ok(v) => Ok(Some(v)),
        Err(e) if q => {
            s.s(
                &format!("ERR_{name}"),
                format!("{e:#}").replace(['\n', ';'], " "),
            );
            Ok(None)
        }
        Err(e) => Err(e.context(format!("step {name}"))),
    }
}

/// A spinner on stderr for a step, drawn only when stderr is a terminal and only once the
/// step has lasted a moment (300 ms); cleared when the step ends. Nothing in pipes.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn start(name: &str) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(name.to_owned());
        // Shown only if the step is still running after a moment.
        let later = bar.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            if !later.is_finished() {
                later.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                later.enable_steady_tick(std::time::Duration::from_millis(120));
            }
        });
        Self(Some(bar))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// Prints the summary and writes `summary.json` into the dump folder.
pub(super) fn finish(s: &Summary, dump: Option<&Path>) -> Result<()> {
    s.print();
    if let Some(dir) = dump {
        let text = serde_json::to_string_pretty(&s.json())?;
        std::fs::write(dir.join("summary.json"), text)?;
    }
    Ok(())
}
