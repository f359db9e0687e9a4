//! The Python package as the tests' oracle: `string_type`, `max_diff`,
//! `ModelInputs.guess_dynamic_shapes`, `move_to_kwargs` and the names of flattened values
//! computed by onnx-diagnostic 0.9.3 itself (its helper and serialization modules, installed
//! in the project's `.venv` by `scripts/setup`) on the same values, so the expected strings and
//! numbers of the tests are never typed by hand.
//!
//! A test queues its requests ([`Oracle::string_type`], [`Oracle::max_diff`],
//! [`Oracle::flatten_names`], ...), then [`Oracle::run`] starts Python once (importing torch
//! takes seconds) and returns the answers in order. Values cross as JSON, their tensors in one
//! safetensors file; the custom classes the oracle rebuilds are those of `oracle/oracle.py`
//! (`DynamicCache` from a [`Value`]; the other caches and the output classes through
//! [`Oracle::value`] and that file's constructions).

// Test support: a failure to run the oracle fails the calling test, as an assertion does.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use onnx_diagnostic_core::{StringTypeOptions, Value};
use serde_json::{Value as Json, json};

/// One input set: positional and named values.
pub type InputSet = (Vec<Value>, Vec<(String, Value)>);

/// Queued requests to the Python package.
#[derive(Default)]
pub struct Oracle {
    requests: Vec<Json>,
    tensors: Vec<(String, tch::Tensor)>,
}

/// What the Python package's `max_diff` returned (without `argm` and `dev`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PyDiff {
    /// `abs`.
    pub abs: f64,
    /// `rel`.
    pub rel: f64,
    /// `sum`.
    pub sum: f64,
    /// `n`.
    pub n: f64,
    /// `dnan`.
    pub dnan: f64,
}

/// One answer of [`Oracle::run`].
#[derive(Clone, Debug)]
pub enum Answer {
    /// A `string_type` string.
    Text(String),
    /// A `max_diff` result.
    Diff(PyDiff),
    /// The names of flattened tensors ([`Oracle::flatten_names`]).
    Names(Vec<String>),
    /// Any other answer, as JSON ([`Oracle::code_needing_rewriting`]).
    Json(Json),
}

impl Answer {
    /// The string of a `string_type` answer.
    ///
    /// # Panics
    /// For another answer.
    pub fn text(&self) -> &str {
        match self {
            Answer::Text(s) => s,
            other => panic!("{other:?}, not a string"),
        }
    }

    /// The names of a `flatten_names` answer.
    ///
    /// # Panics
    /// For another answer.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Answer::Names(n) => n.iter().map(String::as_str).collect(),
            other => panic!("{other:?}, not names"),
        }
    }

    /// A JSON answer.
    ///
    /// # Panics
    /// For another answer.
    pub fn json(&self) -> &Json {
        match self {
            Answer::Json(j) => j,
            other => panic!("{other:?}, not JSON"),
        }
    }

    /// The result of a `max_diff` answer.
    ///
    /// # Panics
    /// For another answer.
    pub fn diff(&self) -> PyDiff {
        match self {
            Answer::Diff(d) => *d,
            other => panic!("{other:?}, not a max_diff"),
        }
    }
}

impl Oracle {
    /// No request yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value as the Python side rebuilds it (its tensors queued with the requests), to
    /// compose the constructions of `oracle/oracle.py` that no [`Value`] maps to by itself
    /// (`{"DynamicCacheLayers": ...}`, `{"output": ...}`; see that file).
    pub fn value(&mut self, v: &Value) -> Json {
        self.encode(v)
    }

    /// Queues the names torch.export gives the tensors of `python` (a construction of
    /// `oracle/oracle.py`) passed as the argument `name`, with the package's serializers
    /// registered; `export` also runs a real `torch.export.export` to check them. Returns the
    /// answer's index.
    pub fn flatten_names(&mut self, name: &str, python: Json, export: bool) -> usize {
        self.requests.push(json!({
            "fn": "flatten_names", "name": name, "value": python, "export": export,
        }));
        self.requests.len() - 1
    }

    /// Queues the package's `code_needing_rewriting` for each of `names` and for every class
    /// it knows: the answer is `{"known": [CLASS...], "rewrites": {CLASS: [[QUALNAME,
    /// PRE_REWRITER, HAS_FILTER]...] or null}}` ([`Answer::json`]). Returns its index.
    pub fn code_needing_rewriting(&mut self, names: &[&str]) -> usize {
        self.requests
            .push(json!({ "fn": "code_needing_rewriting", "names": names }));
        self.requests.len() - 1
    }

    /// Queues the keys the package's validate writes for `model_id` (a real run as far as it
    /// goes here, its ONNX checks on `onnx`, the keys its source writes; see
    /// `validate_summary_keys` in `oracle/oracle.py`): a [`Answer::names`] answer. Returns its
    /// index.
    pub fn validate_summary_keys(&mut self, model_id: &str, onnx: &std::path::Path) -> usize {
        self.requests.push(json!({
            "fn": "validate_summary_keys", "model_id": model_id, "onnx": onnx.display().to_string(),
        }));
        self.requests.len() - 1
    }

    /// Queues the input sets the package makes for `model_id` (one of its preinstalled
    /// configs) and `task`, and their dynamic shapes, each printed by `string_type` with
    /// shapes: a JSON answer `{"inputs": TEXT, "inputs2": TEXT, ..., "dynamic_shapes": TEXT}`.
    /// Returns its index.
    pub fn task_sets(&mut self, model_id: &str, task: &str) -> usize {
        self.requests
            .push(json!({ "fn": "task_sets", "model_id": model_id, "task": task }));
        self.requests.len() - 1
    }

    fn encode(&mut self, v: &Value) -> Json {
        match v {
            Value::Tensor(t) => {
                let key = format!("t{}", self.tensors.len());
                self.tensors.push((
                    key.clone(),
                    t.as_tch().to_device(tch::Device::Cpu).contiguous(),
                ));
                json!({ "tensor": key })
            }
            Value::Int(i) => json!({ "int": i }),
            Value::Float(f) => json!({ "float": f }),
            Value::Bool(b) => json!({ "bool": b }),
            Value::Str(s) => json!({ "str": s }),
            Value::None => json!({ "none": null }),
            Value::List(items) => {
                json!({ "list": items.iter().map(|i| self.encode(i)).collect::<Vec<_>>() })
            }
            Value::Tuple(items) => {
                json!({ "tuple": items.iter().map(|i| self.encode(i)).collect::<Vec<_>>() })
            }
            Value::Dict(items) => json!({
                "dict": items
                    .iter()
                    .map(|(k, i)| json!([k, self.encode(i)]))
                    .collect::<Vec<_>>()
            }),
            Value::Custom(c) if c.class_name() == "DynamicCache" => {
                let fields = c.fields();
                let list = |name: &str| match fields.iter().find(|(k, _)| k == name) {
                    Some((_, Value::List(l))) => l.clone(),
                    _ => panic!("DynamicCache without its {name} list"),
                };
                let pairs: Vec<Json> = list("key_cache")
                    .iter()
                    .zip(&list("value_cache"))
                    .map(|(k, v)| json!([self.encode(k), self.encode(v)]))
                    .collect();
                json!({ "DynamicCache": pairs })
            }
            Value::Custom(c) if c.class_name() == "EncoderDecoderCache" => {
                let fields = c.fields();
                let part = |name: &str| match fields.iter().find(|(k, _)| k == name) {
                    Some((_, v)) => v.clone(),
                    None => panic!("EncoderDecoderCache without its {name}"),
                };
                let (own, cross) = (part("self_attention_cache"), part("cross_attention_cache"));
                json!({ "EncoderDecoderCache": [self.encode(&own), self.encode(&cross)] })
            }
            Value::Custom(c) => panic!("the oracle cannot rebuild a {}", c.class_name()),
        }
    }

    /// Queues `string_type(value, **options)`; returns the answer's index.
    pub fn string_type(&mut self, value: &Value, options: &StringTypeOptions) -> usize {
        let v = self.encode(value);
        self.string_type_of(v, options)
    }

    /// Queues `string_type` of a construction of `oracle/oracle.py` (see [`Oracle::value`]);
    /// returns the answer's index.
    pub fn string_type_of(&mut self, v: Json, options: &StringTypeOptions) -> usize {
        self.requests.push(json!({
            "fn": "string_type",
            "value": v,
            "options": {
                "with_shape": options.with_shape,
                "with_min_max": options.with_min_max,
                "with_device": options.with_device,
                "limit": options.limit,
            },
        }));
        self.requests.len() - 1
    }

    /// Queues `max_diff(expected, got)`; returns the answer's index.
    pub fn max_diff(&mut self, expected: &Value, got: &Value) -> usize {
        let (e, g) = (self.encode(expected), self.encode(got));
        self.requests
            .push(json!({ "fn": "max_diff", "expected": e, "got": g }));
        self.requests.len() - 1
    }

    fn sets(&mut self, sets: &[InputSet]) -> Json {
        Json::Array(
            sets.iter()
                .map(|(args, kwargs)| {
                    let a: Vec<Json> = args.iter().map(|v| self.encode(v)).collect();
                    let k: Vec<Json> = kwargs
                        .iter()
                        .map(|(n, v)| json!([n, self.encode(v)]))
                        .collect();
                    json!([a, k])
                })
                .collect(),
        )
    }

    /// Queues `ModelInputs(model, sets).guess_dynamic_shapes(auto=auto)` for a module whose
    /// forward takes `signature`, printed by `string_type`; returns the answer's index.
    pub fn guess_dynamic_shapes(
        &mut self,
        signature: &[&str],
        sets: &[InputSet],
        auto: bool,
    ) -> usize {
        let s = self.sets(sets);
        self.requests.push(json!({
            "fn": "guess_dynamic_shapes", "signature": signature, "sets": s, "auto": auto,
        }));
        self.requests.len() - 1
    }

    /// Queues `move_to_kwargs` of the first set with the guessed shapes, printed `args kwargs
    /// dynamic_shapes` (`string_type`, the kwargs with shapes); returns the answer's index.
    pub fn move_to_kwargs(&mut self, signature: &[&str], sets: &[InputSet], auto: bool) -> usize {
        let s = self.sets(sets);
        self.requests.push(json!({
            "fn": "move_to_kwargs", "signature": signature, "sets": s, "auto": auto,
        }));
        self.requests.len() - 1
    }

    /// Runs the Python package on every request, in order.
    ///
    /// # Panics
    /// When the project's Python or onnx-diagnostic cannot run (run `scripts/setup`), naming
    /// Python's error.
    pub fn run(self) -> Vec<Answer> {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!(
            "onnx-diagnostic-oracle-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (requests, tensors, answers) = (
            dir.join("requests.json"),
            dir.join("tensors.safetensors"),
            dir.join("answers.json"),
        );
        std::fs::write(&requests, Json::Array(self.requests).to_string()).expect("write");
        let named: Vec<(&str, &tch::Tensor)> =
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        if named.is_empty() {
            std::fs::write(&tensors, b"").expect("write");
        } else {
            tch::Tensor::write_safetensors(&named, &tensors).expect("write the tensors");
        }
        let out = std::process::Command::new(manifest.join("../../.venv/bin/python"))
            .arg(manifest.join("oracle/oracle.py"))
            .arg(&requests)
            .arg(if named.is_empty() {
                PathBuf::new()
            } else {
                tensors.clone()
            })
            .arg(&answers)
            .output()
            .expect("the project's .venv/bin/python runs (scripts/setup makes it)");
        assert!(
            out.status.success(),
            "the onnx-diagnostic oracle failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&answers).expect("the oracle's answers");
        let _ = std::fs::remove_dir_all(&dir);
        let parsed: Vec<Json> = serde_json::from_str(&text).expect("JSON answers");
        let num = |d: &Json, k: &str| match &d[k] {
            Json::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Json::String(s) => s.parse().unwrap_or(f64::NAN),
            other => panic!("max_diff's {k} is {other}"),
        };
        parsed
            .into_iter()
            .map(|a| match &a {
                Json::String(s) => Answer::Text(s.clone()),
                Json::Array(names) => Answer::Names(
                    names
                        .iter()
                        .map(|n| n.as_str().expect("a name").to_owned())
                        .collect(),
                ),
                Json::Object(o) if !o.contains_key("abs") => Answer::Json(a.clone()),
                d => Answer::Diff(PyDiff {
                    abs: num(d, "abs"),
                    rel: num(d, "rel"),
                    sum: num(d, "sum"),
                    n: num(d, "n"),
                    dnan: num(d, "dnan"),
                }),
            })
            .collect()
    }
}
