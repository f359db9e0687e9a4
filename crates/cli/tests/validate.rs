//! The `validate` command end to end on arnir0/Tiny-LLM: exit status, summary keys, dump folder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::{collections::HashMap, path::PathBuf, process::Command};

use common::{tiny_fails, validate_ok};

/// Runs `onnx-diagnostic validate -m arnir0/Tiny-LLM --run --export onnx ARGS`, asserts it
/// fails, returns its stderr.
fn tiny_llm_fails(args: &[&str]) -> String {
    tiny_fails("arnir0/Tiny-LLM", args)
}

#[test]
fn validate_tiny_llm_exits_zero_with_the_python_keys_and_a_dump() {
    let dump = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("validate_tiny_llm");
    let _ = std::fs::remove_dir_all(&dump);
    let (stdout, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "-o".as_ref(),
        dump.as_os_str(),
    ]);
    for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
        for k in ["abs", "rel", "sum", "n", "dnan"] {
            assert!(
                s.contains_key(&format!("disc_onnx_ort_run{sfx}_{k}")),
                "{sfx} {k}"
            );
        }
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
        assert_eq!(s[&format!("disc_onnx_ort_run{sfx}_dnan")], "0.0");
    }
    let n: usize = s["n_node_nodes"].parse().unwrap();
    assert!(n <= 142, "{n}");
    assert!(!s.contains_key("n_node_Identity"), "{stdout}");
    for k in [
        "time_export_export",
        "time_export_onnx",
        "onnx_size",
        "version_onnx_diagnostic",
    ] {
        assert!(s.contains_key(k), "{k}");
    }
    // Every key is named as onnx-diagnostic 0.9.3's validate names it (the oracle: a run of
    // its validate as far as it goes here, its ONNX checks on our file, the keys its source
    // writes), but those it has no counterpart for (README, "validate summary keys").
    let mut o = onnx_diagnostic_testing::oracle::Oracle::new();
    let i = o.validate_summary_keys("arnir0/Tiny-LLM", &dump.join("model.onnx"));
    let answers = o.run();
    let python: std::collections::HashSet<&str> = answers[i].names().into_iter().collect();
    assert!(python.contains("disc_onnx_ort_run22_abs"), "{python:?}");
    let ours_only = |k: &str| {
        [
            "export_guards",
            "export_patch",
            "export_rewrite",
            "memory_peak",
            "model_source",
        ]
        .contains(&k)
            || (k.starts_with("disc_exported") && !k.starts_with("disc_exported_"))
    };
    let mut drift: Vec<&String> = s
        .keys()
        .filter(|k| !python.contains(k.as_str()) && !ours_only(k))
        .collect();
    drift.sort();
    assert!(
        drift.is_empty(),
        "keys the Python package names otherwise: {drift:?}"
    );
    // The peak resident memory of the process, in MiB: at least the model and libtorch.
    let peak: f64 = s["memory_peak"].parse().unwrap();
    assert!(peak > 50.0, "{peak}");
    assert_eq!(s["model_dtype"], "torch.float32");
    for f in [
        "model.onnx",
        "exported_program.txt",
        "exported_program.json",
        "exported_program.safetensors",
        "summary.json",
        "inputs.safetensors",
        "inputs2.safetensors",
        "inputs_empty_cache.safetensors",
        "inputs_batch1.safetensors",
        "expected.safetensors",
        "expected2.safetensors",
        "expected_empty_cache.safetensors",
        "expected_batch1.safetensors",
    ] {
        assert!(dump.join(f).exists(), "{f} missing");
    }
    // The saved program loads back and prints as the exported one.
    let loaded =
        onnx_diagnostic_core::ExportedProgram::load(&dump.join("exported_program.json")).unwrap();
    assert_eq!(
        loaded.to_string(),
        std::fs::read_to_string(dump.join("exported_program.txt")).unwrap()
    );
    // The dumped inputs are named as the ONNX inputs, the expected outputs as its outputs.
    let inputs = tch::Tensor::read_safetensors(dump.join("inputs2.safetensors")).unwrap();
    let mut names: Vec<_> = inputs.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "attention_mask",
            "input_ids",
            "past_key_values_key_0",
            "past_key_values_value_0",
            "position_ids"
        ]
    );
    let expected = tch::Tensor::read_safetensors(dump.join("expected2.safetensors")).unwrap();
    let logits = &expected.iter().find(|(n, _)| n == "logits").unwrap().1;
    assert_eq!(logits.size(), [3, 4, 32000]);
}

#[test]
fn unknown_models_are_refused_with_the_catalog() {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(["validate", "-m", "no/such-model", "--run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no/such-model") && err.contains("arnir0/Tiny-LLM"),
        "{err}"
    );
}

/// Runs `tests/parity/make_reference.py` (transformers builds the model of `config` and saves
/// it with `save_pretrained`): the checkpoint directory.
fn transformers_checkpoint(name: &str, config: &str) -> PathBuf {
    common::saved_checkpoint(name, "make_reference.py", config, &[])
}

/// A checkpoint directory written by transformers' `save_pretrained` works with `-m DIR`.
#[test]
fn validate_accepts_a_save_pretrained_directory() {
    let ckpt = transformers_checkpoint(
        "validate_checkpoint",
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":256,
        "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":128,"tie_word_embeddings":true}"#,
    );
    let (_, s) = validate_ok(&["-m".as_ref(), ckpt.as_os_str()]);
    assert_eq!(s["model_source"], "checkpoint");
    assert_eq!(s["model_dtype"], "torch.float32");
    let abs: f64 = s["disc_onnx_ort_run_abs"].parse().unwrap();
    assert!(abs <= 1e-4, "{abs}");
}

/// Phi-3 with `longrope` as transformers 5.23 saves it (`rope_parameters` with both `type` and
/// `rope_type`, as Phi-3.5-mini's hub config): validates, every set within 1e-4, the long
/// factors in use (the cache of 30 positions is beyond the original 6).
#[test]
fn a_phi3_longrope_checkpoint_saved_by_transformers_validates() {
    let ckpt = transformers_checkpoint(
        "validate_phi3_longrope",
        r#"{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,
        "original_max_position_embeddings":6,"rope_scaling":{"type":"longrope",
        "short_factor":[1.0,1.1,1.2,1.3],"long_factor":[2.0,3.0,4.0,5.0]},"pad_token_id":0}"#,
    );
    let saved = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    assert!(
        saved.contains(r#""type": "longrope""#) && saved.contains(r#""rope_type": "longrope""#),
        "{saved}"
    );
    let (_, s) = validate_ok(&["-m".as_ref(), ckpt.as_os_str()]);
    assert_eq!(s["model_class"], "Phi3ForCausalLM");
    for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
    }
}

/// Qwen3, Qwen3Moe and Mixtral checkpoints as transformers 5.23 saves them (the experts one by
/// one, Mixtral's under `block_sparse_moe`, with a window of 3) validate with `-m DIR -o
/// DUMP`, every set within 1e-4; the mixture-of-experts ones through
/// `patched_Qwen3MoeSparseMoeBlock.forward`.
#[test]
fn qwen3_and_mixture_of_experts_checkpoints_saved_by_transformers_validate() {
    for (name, config, moe) in [
        (
            "validate_qwen3",
            r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":96,
            "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,
            "max_position_embeddings":64}"#,
            false,
        ),
        (
            "validate_qwen3_moe",
            r#"{"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe",
            "vocab_size":96,"hidden_size":32,"intermediate_size":48,"moe_intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "num_experts":6,"num_experts_per_tok":2,"decoder_sparse_step":2,
            "max_position_embeddings":64}"#,
            true,
        ),
        (
            "validate_mixtral",
            r#"{"architectures":["MixtralForCausalLM"],"model_type":"mixtral","vocab_size":96,
            "hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":4,
            "num_experts_per_tok":2,"sliding_window":3,"max_position_embeddings":64}"#,
            true,
        ),
    ] {
        let ckpt = transformers_checkpoint(name, config);
        // With a dump folder: the inputs and expected outputs are written too (a sliding
        // cache layer is a view, written contiguous).
        let dump = ckpt.with_file_name("dump");
        let (_, s) = validate_ok(&[
            "-m".as_ref(),
            ckpt.as_os_str(),
            "-o".as_ref(),
            dump.as_os_str(),
        ]);
        assert!(dump.join("expected2.safetensors").is_file(), "{name}");
        assert_eq!(s["model_source"], "checkpoint", "{name}");
        for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= 1e-4, "{name} {sfx}: {abs}");
        }
        if moe {
            assert!(
                s["export_patch"].contains("patched_Qwen3MoeSparseMoeBlock.forward"),
                "{name}: {}",
                s["export_patch"]
            );
            // Without the patches the export stops at the experts loop, naming its line.
            let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
                .args(["validate", "--run", "--export", "onnx", "--no-patch", "-m"])
                .arg(&ckpt)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{name}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("data-dependent size u0 (made by nonzero at")
                    && err.contains("models/qwen3_moe.rs:"),
                "{name}: {err}"
            );
        }
    }
}

/// A GPT-2 checkpoint: the architecture is named with the supported ones, before any field is
/// read (not `missing field hidden_size`).
#[test]
fn a_gpt2_checkpoint_is_refused_naming_its_class() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("validate_gpt2");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let made = Command::new(manifest.join("../../.venv/bin/python"))
        .arg("-c")
        .arg(format!(
            "from transformers import GPT2Config, GPT2LMHeadModel\n\
             GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, \
             n_positions=32)).save_pretrained(r'{}')",
            dir.display()
        ))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(["validate", "--run", "--export", "onnx", "-m"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GPT2LMHeadModel")
            && err.contains("not supported")
            && err.contains("LlamaForCausalLM, MistralForCausalLM"),
        "{err}"
    );
    assert!(!err.contains("hidden_size"), "{err}");
}

/// Sizes no model can be built with are typed errors naming the field: exit status 1, no
/// panic (101).
#[test]
fn sizes_that_build_no_model_exit_one_naming_the_field() {
    for (mop, says) in [
        (
            "num_attention_heads=0",
            "config field num_attention_heads: 0: must be at least 1",
        ),
        (
            "vocab_size=-1",
            "config field vocab_size: -1: must be at least 1",
        ),
        (
            "num_key_value_heads=3",
            "num_key_value_heads: 3 does not divide",
        ),
        ("num_hidden_layers=-1", "config field num_hidden_layers"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
            .args(["validate", "-m", "arnir0/Tiny-LLM", "--run", "--mop", mop])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mop}: {err}");
        assert!(err.contains(says), "{mop}: {err}");
    }
}

/// Every catalog model validates (exit 0, every discrepancy within 1e-4) in float32; the small
/// ones (below 10 M weights) also in float16 and bfloat16. The real-width entries
/// (microsoft/phi-2, HuggingFaceTB/SmolLM3-3B, google/gemma-2-2b reduced to a few layers, the
/// Bart models) run in float32 only: in the half types validate's own tolerance was all they
/// were held to, and their three runs were most of this binary's time; the half types are
/// checked against transformers on small models by crates/transformers' dtype tests.
#[test]
fn every_catalog_model_validates() {
    for id in onnx_diagnostic_transformers::catalog::model_ids() {
        // The small entries stay within one float16 step at 8 and one bfloat16 step at 2
        // (logits of 2 to 4), far tighter than validate's defaults.
        for (dtype, small) in [
            ("float32", 1e-4),
            ("float16", 1.0 / 128.0),
            ("bfloat16", 1.0 / 64.0),
        ] {
            let (_, s) = validate_ok(&[
                "-m".as_ref(),
                id.as_ref(),
                "--dtype".as_ref(),
                dtype.as_ref(),
            ]);
            let weights: f64 = s["model_nweights"].parse().unwrap();
            // text-generation has four sets, text2text-generation two, image-text-to-text
            // three (the last with other images; Idefics a fourth past its rotary tables),
            // mask-generation three (the last with other numbers of prompts and points).
            let sets: &[&str] = match (s["model_task"].as_str(), s["model_class"].as_str()) {
                ("text-generation", _) => &["", "22", "2_empty_cache", "2_batch1"],
                // Idefics: and a length past its rotary tables.
                ("image-text-to-text", "IdeficsForVisionText2Text") => {
                    &["", "22", "2_images", "2_long"]
                }
                ("image-text-to-text", _) => &["", "22", "2_images"],
                ("mask-generation", _) => &["", "22", "2_points"],
                _ => &["", "22"],
            };
            // In the half types a mixture of experts may route a token near a tie to another
            // expert than eager does, and Gemma3's SigLIP attention (tiny-random/gemma-3)
            // averages 4096 patches in the half type, where ONNX Runtime's CPU kernels and
            // libtorch's round differently: those entries keep validate's own tolerance.
            let loose = [
                "Qwen3MoeForCausalLM",
                "MixtralForCausalLM",
                "Gemma3ForConditionalGeneration",
            ]
            .contains(&s["model_class"].as_str());
            if (weights < 1e7 && !loose) || dtype == "float32" {
                for sfx in sets {
                    let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
                    assert!(abs <= small, "{id} {dtype} {sfx}: {abs}");
                }
            }
            // The tasks the Python package runs these ids for.
            let task = match id {
                "facebook/bart-base" => "feature-extraction",
                "facebook/bart-large-cnn" => "summarization",
                _ => s["model_task"].as_str(),
            };
            assert_eq!(s["model_task"], task, "{id}");
            if weights >= 1e7 {
                break;
            }
        }
    }
}

/// `-t TASK` picks among a model's tasks (`summarization` for a generation model, its sets
/// without `decoder_input_ids`), and a task the model cannot take is refused naming the ones
/// it takes.
#[test]
fn a_task_is_chosen_with_t() {
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration".as_ref(),
        "-t".as_ref(),
        "summarization".as_ref(),
    ]);
    assert_eq!(s["model_task"], "summarization");
    assert!(
        s["model_inputs"].starts_with(
            "dict(input_ids:T7s2x12,attention_mask:T7s2x12,past_key_values:EncoderDecoderCache("
        ),
        "{}",
        s["model_inputs"]
    );
    for sfx in ["", "22"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
    }
    let err = tiny_fails(
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration",
        &["-t", "feature-extraction"],
    );
    assert!(
        err.contains("PLBartForConditionalGeneration takes no feature-extraction inputs")
            && err.contains("text2text-generation, summarization"),
        "{err}"
    );
}

/// `--mop KEY=VALUE` overrides the config: two layers instead of one, a linear rope.
#[test]
fn model_options_override_the_config() {
    let (_, one) = validate_ok(&["-m".as_ref(), "arnir0/Tiny-LLM".as_ref()]);
    let (_, two) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--mop".as_ref(),
        "num_hidden_layers=2".as_ref(),
        "--mop".as_ref(),
        r#"rope_scaling={"rope_type":"linear","factor":2.0}"#.as_ref(),
    ]);
    let n = |s: &HashMap<String, String>, k: &str| s[k].parse::<i64>().unwrap();
    // One more decoder layer of weights: q, k, v, o, gate, up, down and two norms.
    let per_layer = 192 * 192 + 2 * 192 * 96 + 192 * 192 + 3 * 192 * 1024 + 2 * 192;
    assert_eq!(
        n(&two, "model_nweights") - n(&one, "model_nweights"),
        per_layer
    );
    assert!(n(&two, "n_node_nodes") > n(&one, "n_node_nodes"));
    let abs: f64 = two["disc_onnx_ort_run_abs"].parse().unwrap();
    assert!(abs <= 1e-4, "{abs}");
}

/// A dynamic rope (`--mop`) exports only with the patches: with them every discrepancy is
/// within 1e-4 and `export_patch` names the patch; with `--no-patch` the run stops on the
/// data-dependent branch, naming the line.
#[test]
fn the_dynamic_rope_validates_with_the_patches_only() {
    let dynamic: [&std::ffi::OsStr; 6] = [
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--mop".as_ref(),
        r#"rope_scaling={"rope_type":"dynamic","factor":2.0}"#.as_ref(),
        "--mop".as_ref(),
        "max_position_embeddings=16".as_ref(),
    ];
    let (_, s) = validate_ok(&dynamic);
    let applied: Vec<&str> = s["export_patch"].split(',').collect();
    assert!(
        applied.contains(&"patched_LlamaRotaryEmbedding.forward")
            && applied.contains(&"patched_infer_size"),
        "{applied:?}"
    );
    for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(["validate", "--run", "--export", "onnx", "--no-patch"])
        .args(dynamic)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data-dependent") && err.contains("llama/rotary.rs"),
        "{err}"
    );
}

/// `--inputs2 N` makes the second set as the Python package's `add_second_input=N` does: one
/// more row and one more cached position, N more new tokens (a single row when N < 0); 0
/// keeps `inputs` only.
#[test]
fn the_second_input_set_follows_inputs2() {
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--inputs2".as_ref(),
        "3".as_ref(),
    ]);
    // inputs2 is batch 3, sequence 6, cache 31: logits 3*6*32000, cache 2 * 3*1*37*96.
    let n: f64 = s["disc_onnx_ort_run22_n"].parse().unwrap();
    assert_eq!(n, (3 * 6 * 32000 + 2 * 3 * 37 * 96) as f64);
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--inputs2=-2".as_ref(),
    ]);
    // batch 1, sequence 5, cache 31.
    let n: f64 = s["disc_onnx_ort_run22_n"].parse().unwrap();
    assert_eq!(n, (5 * 32000 + 2 * 36 * 96) as f64);
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--inputs2".as_ref(),
        "0".as_ref(),
    ]);
    assert!(s.contains_key("disc_onnx_ort_run_abs"));
    assert!(
        !s.keys().any(|k| k.starts_with("disc_onnx_ort_run2")),
        "{s:?}"
    );
}

/// `--iop KEY=VALUE` sets the sizes of every input set, with the Python names; an unknown key
/// or another cache class is refused naming it.
#[test]
fn input_options_set_the_sizes_of_the_input_sets() {
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--iop".as_ref(),
        "batch_size=3".as_ref(),
        "--iop".as_ref(),
        "sequence_length=12".as_ref(),
        "--iop".as_ref(),
        "sequence_length2=5".as_ref(),
    ]);
    assert_eq!(
        s["model_inputs_options"],
        "{'batch_size': 3, 'sequence_length': 12, 'sequence_length2': 5}"
    );
    assert!(
        s["model_inputs"].starts_with("dict(input_ids:T7s3x5,attention_mask:T7s3x17,"),
        "{}",
        s["model_inputs"]
    );
    // inputs: batch 3, sequence 5, cache 12; inputs2: batch 4, sequence 6, cache 13;
    // inputs_batch1: batch 1, sequence 5, cache 12 (cache outputs hold cache + sequence).
    let n = |k: &str| -> f64 { s[&format!("disc_onnx_ort_run{k}_n")].parse().unwrap() };
    assert_eq!(n(""), (3 * 5 * 32000 + 2 * 3 * 17 * 96) as f64);
    assert_eq!(n("22"), (4 * 6 * 32000 + 2 * 4 * 19 * 96) as f64);
    assert_eq!(n("2_empty_cache"), (3 * 5 * 32000 + 2 * 3 * 5 * 96) as f64);
    assert_eq!(n("2_batch1"), (5 * 32000 + 2 * 17 * 96) as f64);
    for (option, said) in [
        ("cls_cache=HybridCache", "no sliding-window layer"),
        (
            "cls_cache=QuantizedCache",
            "expected DynamicCache, StaticCache",
        ),
        ("beam=2", "unknown option"),
        ("batch_size=0", "at least 1"),
    ] {
        let err = tiny_llm_fails(&["--iop", option]);
        assert!(err.contains(option) && err.contains(said), "{err}");
    }
    let err = tiny_llm_fails(&[
        "--iop",
        "cls_cache=StaticCache",
        "--iop",
        "max_cache_len=20",
    ]);
    assert!(
        err.contains("max_cache_len=20") && err.contains("a set holds 35 positions"),
        "{err}"
    );
}

/// `--dtype float16` converts the model and the cache and checks ONNX Runtime within 1e-2;
/// `--dtype bfloat16` too, through the float32-emulating copy (ONNX Runtime's CPU provider has
/// no bfloat16 kernels), said in `onnx_ort_emulated`, the saved files staying bfloat16.
#[test]
fn validate_in_float16_and_bfloat16() {
    for (dtype, kind, bytes) in [
        ("float16", tch::Kind::Half, 2),
        ("bfloat16", tch::Kind::BFloat16, 2),
    ] {
        let dump = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("validate_{dtype}"));
        let _ = std::fs::remove_dir_all(&dump);
        let (stdout, s) = validate_ok(&[
            "-m".as_ref(),
            "arnir0/Tiny-LLM".as_ref(),
            "--dtype".as_ref(),
            dtype.as_ref(),
            "-o".as_ref(),
            dump.as_os_str(),
        ]);
        assert_eq!(s["model_dtype"], format!("torch.{dtype}"));
        assert_eq!(s["version_dtype"], dtype);
        let n: i64 = s["model_nweights"].parse().unwrap();
        assert_eq!(s["model_size"], (n * bytes).to_string());
        for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            // Not float32 in disguise: the rounding of the type shows.
            assert!(abs > 1e-5 && abs <= 1e-2, "{dtype} {sfx}: {abs}");
            assert_eq!(s[&format!("disc_exported{sfx}_abs")], "0.0", "{stdout}");
        }
        assert_eq!(
            s.contains_key("onnx_ort_emulated"),
            dtype == "bfloat16",
            "{stdout}"
        );
        let inputs = tch::Tensor::read_safetensors(dump.join("inputs.safetensors")).unwrap();
        for (name, t) in &inputs {
            let want = if name.starts_with("past_key_values") {
                kind
            } else {
                tch::Kind::Int64
            };
            assert_eq!(t.kind(), want, "{dtype} {name}");
        }
        let expected = tch::Tensor::read_safetensors(dump.join("expected.safetensors")).unwrap();
        assert!(expected.iter().all(|(_, t)| t.kind() == kind));
    }
    let emulated = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--dtype".as_ref(),
        "bfloat16".as_ref(),
    ])
    .1["onnx_ort_emulated"]
        .clone();
    assert!(
        emulated.starts_with("bfloat16 computed in float32")
            && emulated.contains("Could not find an implementation"),
        "{emulated}"
    );
    // The tolerance is the type's unless --atol says otherwise.
    let err = tiny_llm_fails(&["--dtype", "float16", "--atol", "1e-6"]);
    assert!(err.contains("exceeds 1e-6"), "{err}");
}

/// `--rewrite` (the default) applies what `code_needing_rewriting` lists for the architecture
/// (nothing for Llama); `--no-rewrite` and `--no-patch` turn it off; `--rewrite --no-patch` is
/// refused.
#[test]
fn rewriting_follows_the_rewrite_flags() {
    let (_, s) = validate_ok(&["-m".as_ref(), "arnir0/Tiny-LLM".as_ref()]);
    assert_eq!(s["version_rewrite"], "True");
    assert_eq!(s["export_rewrite"], "none");
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "arnir0/Tiny-LLM".as_ref(),
        "--no-rewrite".as_ref(),
    ]);
    assert_eq!(s["version_rewrite"], "False");
    let err = tiny_llm_fails(&["--rewrite", "--no-patch"]);
    assert!(err.contains("--no-patch"), "{err}");
}

/// `--device cuda` needs a GPU libtorch sees and ONNX Runtime's CUDA provider. On a machine
/// declared without them (`onnx_diagnostic_testing::machine`) the run stops saying which is
/// missing and what to do, never a silent CPU run; on one declared with them Tiny-LLM
/// validates on the GPU within validate's float32 tolerance. Other device names are refused.
#[test]
fn cuda_follows_the_machine() {
    use onnx_diagnostic_testing::machine::expects_cuda;
    if expects_cuda() {
        let (_, s) = validate_ok(&[
            "-m".as_ref(),
            "arnir0/Tiny-LLM".as_ref(),
            "--device".as_ref(),
            "cuda".as_ref(),
        ]);
        assert_eq!(s["model_device"], "cuda");
        let abs: f64 = s["disc_onnx_ort_run_abs"].parse().unwrap();
        assert!(abs <= 1e-4, "{abs}");
    } else {
        // libtorch is asked first: its CUDA build sees no device here.
        let err = tiny_llm_fails(&["--device", "cuda"]);
        assert!(
            err.contains("libtorch sees 0 CUDA device(s)") && err.contains("--device cpu"),
            "{err}"
        );
    }
    let err = tiny_llm_fails(&["--device", "gpu"]);
    assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
}

/// Gemma2 and Gemma3 checkpoints saved by transformers validate with every cache class that fits
/// them, within 1e-4 on every set: windows of 3 and 4 against caches of 30 and 31 positions (the
/// sliding layers hold 2 and 3, the static sliding slots have rolled) and an empty cache.
#[test]
fn gemma_checkpoints_validate_with_every_cache_class() {
    let gemma2 = transformers_checkpoint(
        "validate_gemma2",
        r#"{"architectures":["Gemma2ForCausalLM"],"model_type":"gemma2","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":3,"num_attention_heads":4,
        "num_key_value_heads":2,"head_dim":8,"max_position_embeddings":64,
        "query_pre_attn_scalar":16,"sliding_window":3,"attn_logit_softcapping":2.0,
        "final_logit_softcapping":1.5,"pad_token_id":0}"#,
    );
    let gemma3 = transformers_checkpoint(
        "validate_gemma3",
        r#"{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":3,"num_attention_heads":4,
        "num_key_value_heads":1,"head_dim":8,"max_position_embeddings":64,
        "query_pre_attn_scalar":8,"sliding_window":4,"sliding_window_pattern":3,
        "rope_local_base_freq":100.0,"pad_token_id":0}"#,
    );
    for (ckpt, class) in [
        (&gemma2, "Gemma2ForCausalLM"),
        (&gemma3, "Gemma3ForCausalLM"),
    ] {
        for cls in ["DynamicCache", "StaticCache", "HybridCache"] {
            let iop = format!("cls_cache={cls}");
            let (_, s) = validate_ok(&[
                "-m".as_ref(),
                ckpt.as_os_str(),
                "--iop".as_ref(),
                iop.as_ref(),
            ]);
            assert_eq!(s["model_class"], class);
            assert!(s["model_inputs"].contains(cls), "{}", s["model_inputs"]);
            for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
                let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
                assert!(abs <= 1e-4, "{class} {cls} {sfx}: {abs}");
            }
        }
    }
    // A SlidingWindowCache has no full layer for Gemma's: exit 1 naming the option.
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(["validate", "--run", "--export", "onnx", "-m"])
        .arg(&gemma2)
        .args(["--iop", "cls_cache=SlidingWindowCache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cls_cache=SlidingWindowCache") && err.contains("HybridCache"),
        "{err}"
    );
}

/// The catalog's tiny Gemma3 (window 512, both layers sliding) with a cache longer than its
/// window: the sliding layers hold 511 positions at export, 0 in the empty-cache set, and ONNX
/// Runtime matches; with each static class too (512 slots holding the last 512 of 520 cached
/// positions: the slots have rolled).
#[test]
fn tiny_gemma3_validates_past_its_window() {
    for cls in [
        "DynamicCache",
        "StaticCache",
        "HybridCache",
        "SlidingWindowCache",
    ] {
        let iop = format!("cls_cache={cls}");
        let (_, s) = validate_ok(&[
            "-m".as_ref(),
            "hf-internal-testing/tiny-random-Gemma3ForCausalLM".as_ref(),
            "--iop".as_ref(),
            "sequence_length=520".as_ref(),
            "--iop".as_ref(),
            iop.as_ref(),
        ]);
        let layer = if cls == "DynamicCache" {
            "DynamicSlidingWindowLayer(T1s2x1x511x8"
        } else {
            "key_cache=#2[T1s2x1x512x8"
        };
        assert!(
            s["model_inputs"].contains(layer),
            "{cls}: {}",
            s["model_inputs"]
        );
        for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= 1e-4, "{cls} {sfx}: {abs}");
        }
        // The tied lm_head (the embedding, 4.2 M of its 4.2 M weights) is stored once: the
        // file (no external data at this size) is the weights and a small graph.
        let (onnx, weights): (f64, f64) = (
            s["onnx_size"].parse().unwrap(),
            s["model_size"].parse().unwrap(),
        );
        assert!(onnx < 1.05 * weights, "{cls}: {onnx} bytes for {weights}");
    }
}

/// The seeds' `validate` command (`-m hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration
/// --run -v 1 --export onnx-dynamo -o dump_test --dtype float16`, on the CPU): exit 0 with the
/// float16 clamp rewritten into a `cond` (`model_rewrite`, `export_rewrite`), the ONNX file
/// accepted by onnx's full checker, within 1e-4 in
/// float32 on both sets; Marian's the same. Without the rewrite the float16 export fails on
/// the encoder layer's test, naming its line.
#[test]
fn the_seeds_plbart_command_validates_and_marian_too() {
    let dump = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dump_plbart");
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration".as_ref(),
        "-v".as_ref(),
        "1".as_ref(),
        "-o".as_ref(),
        dump.as_os_str(),
        "--dtype".as_ref(),
        "float16".as_ref(),
    ]);
    assert_eq!(s["model_task"], "text2text-generation");
    assert_eq!(s["model_class"], "PLBartForConditionalGeneration");
    assert_eq!(s["export_rewrite"], "BartEncoderLayer.forward");
    assert!(
        s["model_rewrite"].contains("'function': 'PLBartEncoderLayer.forward'")
            && s["model_rewrite"].contains("'pre_rewriter': 'or_into_bitor'"),
        "{}",
        s["model_rewrite"]
    );
    // onnx's full checker and strict shape inference accept it.
    onnx_diagnostic_testing::onnx_check(&dump.join("model.onnx"));
    // The rewriting is dumped as the Python validate dumps it (`DIR/rewrite`): the original,
    // the rewritten method and their diff, the clamp moved into the cond's branches.
    let diff = std::fs::read_to_string(dump.join("rewrite/BartEncoderLayer.forward.diff")).unwrap();
    assert!(
        diff.contains("-    if h.kind() == Kind::Half") && diff.contains("cond_value"),
        "{diff}"
    );
    assert!(
        dump.join("rewrite/BartEncoderLayer.forward.rewritten.rs")
            .is_file()
    );
    for sfx in ["", "22"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 3e-2, "float16 {sfx}: {abs}");
    }
    for id in [
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration",
        "sshleifer/tiny-marian-en-de",
    ] {
        let (_, s) = validate_ok(&["-m".as_ref(), id.as_ref()]);
        for sfx in ["", "22"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= 1e-4, "{id} {sfx}: {abs}");
        }
        let err = tiny_fails(id, &["--dtype", "float16", "--no-rewrite"]);
        assert!(
            err.contains("data-dependent") && err.contains("models/bart/mod.rs:"),
            "{err}"
        );
    }
}

/// A BlenderbotSmall checkpoint saved by transformers (the seeds' clamp list names its encoder
/// layer, which is Bart's here): validates in float32 within 1e-4 and in float16 with the
/// clamp rewritten.
#[test]
fn a_blenderbot_small_checkpoint_validates_with_its_clamp_rewritten() {
    let ckpt = common::saved_checkpoint(
        "validate_blenderbot_small",
        "make_seq2seq_reference.py",
        r#"{"architectures":["BlenderbotSmallForConditionalGeneration"],
        "model_type":"blenderbot-small","vocab_size":72,"d_model":16,"encoder_layers":2,
        "decoder_layers":2,"encoder_attention_heads":4,"decoder_attention_heads":4,
        "encoder_ffn_dim":24,"decoder_ffn_dim":24,"max_position_embeddings":64,
        "scale_embedding":true}"#,
        &[],
    );
    for (dtype, tol) in [("float32", 1e-4), ("float16", 3e-2)] {
        let (_, s) = validate_ok(&[
            "-m".as_ref(),
            ckpt.as_os_str(),
            "--dtype".as_ref(),
            dtype.as_ref(),
        ]);
        assert_eq!(s["model_class"], "BlenderbotSmallForConditionalGeneration");
        assert_eq!(s["export_rewrite"], "BartEncoderLayer.forward");
        for sfx in ["", "22"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= tol, "{dtype} {sfx}: {abs}");
        }
    }
}

/// A `BartModel` checkpoint saved by transformers (`AutoModel.from_config`, no `model.`
/// prefix; decoder heads and FFN sizes unlike the encoder's): validates under
/// feature-extraction in float32 within 1e-4 on both sets.
#[test]
fn a_bart_model_checkpoint_validates_for_feature_extraction() {
    let ckpt = common::saved_checkpoint(
        "validate_bart_model",
        "make_seq2seq_reference.py",
        r#"{"architectures":["BartModel"],"model_type":"bart","vocab_size":90,"d_model":24,
        "encoder_layers":3,"decoder_layers":2,"encoder_attention_heads":4,
        "decoder_attention_heads":3,"encoder_ffn_dim":40,"decoder_ffn_dim":28,
        "max_position_embeddings":80,"pad_token_id":1}"#,
        &["--base"],
    );
    let (_, s) = validate_ok(&["-m".as_ref(), ckpt.as_os_str()]);
    assert_eq!(s["model_class"], "BartModel");
    assert_eq!(s["model_task"], "feature-extraction");
    assert!(
        s["model_inputs"].contains("T1s2x3x30x8") && s["model_inputs"].contains("T1s2x3x12x8"),
        "{}",
        s["model_inputs"]
    );
    for sfx in ["", "22"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
    }
}

/// A UNet directory written by diffusers' `save_pretrained` validates with `-m DIR`: every set
/// (two batches, 40×48 and 33×35 after exporting at 32×32) within 1e-4 in ONNX Runtime, no
/// guard left, the diffusers patches applied; without them the export keeps the guard on the
/// height and the odd resolution fails, naming it. The catalog id validates in float16 too.
#[test]
fn a_unet_saved_by_diffusers_validates_for_every_resolution() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("validate_unet");
    let config = r#"{"_class_name": "UNet2DConditionModel", "sample_size": 24,
    "block_out_channels": [16, 32, 32], "norm_num_groups": 8, "cross_attention_dim": 24,
    "attention_head_dim": [2, 4, 4], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#;
    let (ckpt, io) =
        onnx_diagnostic_testing::unet_reference(&root, config, "x:1:8:8:2", &[]).unwrap();
    let dump = root.join("dump");
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        ckpt.as_os_str(),
        "-o".as_ref(),
        dump.as_os_str(),
    ]);
    assert!(dump.join("expected_odd_resolution.safetensors").is_file());
    assert_eq!(s["model_source"], "checkpoint");
    assert_eq!(s["model_class"], "UNet2DConditionModel");
    assert_eq!(s["model_task"], "text-to-image");
    assert_eq!(
        s["model_nweights"],
        io["n_parameters"].int64_value(&[0]).to_string()
    );
    assert_eq!(s["export_guards"], "0");
    for p in [
        "patched_UNet2DConditionModel.forward_upsample_size",
        "patched_Upsample2D.forward",
    ] {
        assert!(s["export_patch"].contains(p), "{}", s["export_patch"]);
    }
    assert_eq!(
        s["model_inputs"],
        "dict(sample:T1s2x4x24x24,timestep:T7s1,encoder_hidden_states:T1s2x4x24)"
    );
    for sfx in ["", "22", "2_resolution", "2_odd_resolution"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
    }
    let err = tiny_fails(
        ckpt.to_str().unwrap(),
        &["--patch", "patch_diffusers=False"],
    );
    assert!(
        err.contains("guard Mod(height, 4) == 0")
            && err.contains("unet_2d_condition.rs:")
            && err.contains("height=25"),
        "{err}"
    );
    for (dtype, atol) in [("float32", 1e-4), ("float16", 1.0 / 128.0)] {
        let (_, s) = validate_ok(&[
            "-m".as_ref(),
            "diffusers/tiny-torch-full-checker/unet".as_ref(),
            "--dtype".as_ref(),
            dtype.as_ref(),
        ]);
        assert_eq!(s["model_dtype"], format!("torch.{dtype}"));
        for sfx in ["", "22", "2_resolution", "2_odd_resolution"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= atol, "{dtype} {sfx}: {abs}");
        }
    }
}
