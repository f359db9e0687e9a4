//! The model layer: one weight source (unread, missing and misshaped checkpoint tensors are
//! errors naming them), the registry (an unsupported architecture is named before any field is
//! parsed), configs as transformers 5.23 saves them (Phi-3 longrope with both type keys),
//! checkpoints in their own type and in shards, every implemented activation against
//! transformers' `ACT2FN`, and deterministic untrained weights.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::{path::PathBuf, process::Command};

use common::{
    check_two_steps, check_two_steps_within, export_and_check_in_ort, reference, reference_with,
};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_transformers::{
    AutoConfig, AutoModelForCausalLM, Error,
    models::{
        llama::{Config, LlamaForCausalLM},
        phi3::Phi3ForCausalLM,
    },
    nn::{ACT2FN, Activation},
    weights::Weights,
};
use tch::Kind;

const TINY: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":96,
"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
"num_key_value_heads":2,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,
"tie_word_embeddings":false,"hidden_act":"silu","pad_token_id":0}"#;

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("model_layer")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of checkpoint `dir` (config.json + model.safetensors) whose tensors `edit` changed.
fn edited_copy(
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, tch::Tensor)>),
) -> PathBuf {
    let out = scratch(name);
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    let mut tensors = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    edit(&mut tensors);
    let refs: Vec<(&str, &tch::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tch::Tensor::write_safetensors(&refs, out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn checkpoint_tensors_no_module_reads_are_refused_by_name() {
    let (dir, io) = reference("layer_tiny", TINY);
    // The checkpoint as saved loads, and matches transformers.
    let model = LlamaForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("layer_tiny", &io, &step, false);
    // named_parameters is what the build read: every checkpoint tensor, once.
    let saved = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let mut expected: Vec<String> = saved.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert_eq!(names, expected);

    // A Qwen3-style q_norm the Llama layer does not have: refused, named.
    let extra = edited_copy(&dir, "extra", |t| {
        t.push((
            "model.layers.0.self_attn.q_norm.weight".to_owned(),
            tch::Tensor::ones([8], (Kind::Float, tch::Device::Cpu)),
        ));
    });
    match LlamaForCausalLM::from_pretrained(&extra) {
        Err(Error::UnusedWeights { model, names }) => {
            assert_eq!(model, "LlamaForCausalLM");
            assert_eq!(names, ["model.layers.0.self_attn.q_norm.weight"]);
        }
        other => panic!("expected UnusedWeights, got {other:?}"),
    }
    let err = AutoModelForCausalLM::from_pretrained(&extra, None, tch::Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("q_norm.weight") && err.contains("another architecture"),
        "{err}"
    );

    // The rotary buffer older checkpoints saved is dropped, as transformers drops it.
    let old = edited_copy(&dir, "inv_freq", |t| {
        t.push((
            "model.layers.1.self_attn.rotary_emb.inv_freq".to_owned(),
            tch::Tensor::ones([4], (Kind::Float, tch::Device::Cpu)),
        ));
    });
    LlamaForCausalLM::from_pretrained(&old).unwrap();

    // Missing and misshaped weights name the weight.
    let missing = edited_copy(&dir, "missing", |t| {
        t.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    });
    let err = LlamaForCausalLM::from_pretrained(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("missing"),
        "{err}"
    );
    // model.norm.weight replaced: misshaped, then an integer tensor where a float weight
    // belongs (a quantized checkpoint).
    for (case, replacement, says) in [
        (
            "misshaped",
            tch::Tensor::ones([31], (Kind::Float, tch::Device::Cpu)),
            ["[31]", "[32]"],
        ),
        (
            "quantized",
            tch::Tensor::ones([32], (Kind::Int8, tch::Device::Cpu)),
            ["I8", "floating"],
        ),
    ] {
        let edited = edited_copy(&dir, case, |t| {
            for (n, w) in t.iter_mut() {
                if n == "model.norm.weight" {
                    *w = replacement.shallow_clone();
                }
            }
        });
        let err = LlamaForCausalLM::from_pretrained(&edited)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.norm.weight") && says.iter().all(|w| err.contains(w)),
            "{case}: {err}"
        );
    }
}

#[test]
fn unknown_and_unsupported_activations_are_refused_by_name() {
    for (act, says) in [
        ("swiglu", "is not an activation of transformers' ACT2FN"),
        ("laplace", "not implemented"),
    ] {
        let cfg = TINY.replace(
            r#""hidden_act":"silu""#,
            &format!(r#""hidden_act":"{act}""#),
        );
        match Config::from_json(&cfg) {
            Err(Error::Activation {
                model,
                name,
                message,
            }) => {
                assert_eq!((model.as_str(), name.as_str()), ("LlamaForCausalLM", act));
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{act}: expected Error::Activation, got {other:?}"),
        }
    }
}

/// Every activation this crate computes, against transformers' `ACT2FN` on the same values
/// (float32, ≤ 1e-6); the names it does not compute are exactly laplace, prelu and xielu.
#[test]
fn activations_match_transformers_act2fn() {
    let dir = scratch("activations");
    let implemented: Vec<&str> = ACT2FN
        .iter()
        .copied()
        .filter(|n| Activation::from_name("m", n).is_ok())
        .collect();
    let refused: Vec<&str> = ACT2FN
        .iter()
        .copied()
        .filter(|n| !implemented.contains(n))
        .collect();
    assert_eq!(refused, ["laplace", "prelu", "xielu"]);
    let script = format!(
        r#"
import torch
from safetensors.torch import save_file
from transformers.activations import ACT2FN
assert sorted(ACT2FN.keys()) == sorted({all:?}), sorted(ACT2FN.keys())
x = torch.linspace(-30.0, 30.0, 2001)
out = {{"x": x}}
for name in {names:?}:
    out[name] = ACT2FN[name](x.clone()).contiguous()
save_file(out, r"{file}")
"#,
        all = ACT2FN,
        names = implemented,
        file = dir.join("act.safetensors").display()
    );
    let status = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let io: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(dir.join("act.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let x = Tensor::from(io["x"].shallow_clone());
    for name in implemented {
        let ours = Activation::from_name("m", name)
            .unwrap()
            .forward(&x)
            .unwrap();
        let d = common::diff(&ours, &io[name]);
        assert!(d <= 1e-6, "{name}: {d}");
    }
}

#[test]
fn a_gpt2_checkpoint_is_refused_naming_its_class_and_the_supported_ones() {
    let dir = scratch("gpt2");
    let script = format!(
        r#"
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(r"{}")
"#,
        dir.display()
    );
    let status = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    match AutoModelForCausalLM::from_pretrained(&dir, None, tch::Device::Cpu) {
        Err(Error::UnsupportedArchitecture {
            architecture,
            supported,
        }) => {
            assert_eq!(architecture, "GPT2LMHeadModel");
            assert!(
                supported.iter().any(|s| s == "LlamaForCausalLM"),
                "{supported:?}"
            );
        }
        other => panic!("expected UnsupportedArchitecture, got {:?}", other.err()),
    }
    // A config of a family not implemented yet is refused, never built as Llama.
    let olmo2 = TINY.replace(r#""model_type":"llama""#, r#""model_type":"olmo2""#);
    assert!(matches!(
        Config::from_json(&olmo2),
        Err(Error::UnsupportedArchitecture { .. })
    ));
    let err = AutoConfig::from_json(&olmo2).unwrap_err().to_string();
    assert!(
        err.contains("olmo2") && err.contains("LlamaForCausalLM"),
        "{err}"
    );
}

#[test]
fn sizes_that_build_no_model_are_refused_naming_the_field() {
    for (key, value, field) in [
        ("num_attention_heads", "0", "num_attention_heads"),
        ("vocab_size", "-1", "vocab_size"),
        ("num_key_value_heads", "3", "num_key_value_heads"),
        ("num_hidden_layers", "-2", "num_hidden_layers"),
        ("hidden_size", "\"big\"", "hidden_size"),
        ("sliding_window", "0", "sliding_window"),
        ("pad_token_id", "96", "pad_token_id"),
    ] {
        // The key set last wins in serde_json's map: the override goes at the end.
        let cfg = format!(
            "{},\"{key}\":{value}}}",
            TINY.trim_end().trim_end_matches('}')
        );
        match Config::from_json(&cfg) {
            Err(Error::ConfigField {
                field: f, message, ..
            }) => {
                assert_eq!(f, field, "{key}={value}: {message}");
            }
            other => panic!("{key}={value}: expected ConfigField, got {other:?}"),
        }
    }
}

/// Phi-3 with `longrope`, its config as transformers 5.23 saves it (`rope_parameters` holding
/// both `type` and `rope_type`, as Phi-3.5-mini's hub config does): loads, matches transformers
/// on the short and the long factors, exports and runs in ONNX Runtime.
#[test]
fn phi3_longrope_saved_by_transformers_matches_it() {
    let cfg = r#"{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","vocab_size":96,
    "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
    "num_key_value_heads":2,"max_position_embeddings":64,"original_max_position_embeddings":6,
    "rope_scaling":{"type":"longrope","short_factor":[1.0,1.1,1.2,1.3],
    "long_factor":[2.0,3.0,4.0,5.0]},"pad_token_id":0,"tie_word_embeddings":false}"#;
    let (dir, io) = reference("phi3_longrope", cfg);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let rope = &saved["rope_parameters"];
    assert_eq!(
        (rope["type"].as_str(), rope["rope_type"].as_str()),
        (Some("longrope"), Some("longrope")),
        "{saved}"
    );
    let model = Phi3ForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("phi3_longrope", &io, &step, false);
    export_and_check_in_ort(&model, &model.config().decoder_dims());
}

/// A checkpoint saved in bfloat16 and sharded (`model.safetensors.index.json`) loads in
/// bfloat16, as transformers' `from_pretrained(dtype="auto")` does, and gives its logits.
#[test]
fn a_sharded_bfloat16_checkpoint_keeps_its_type_and_matches_transformers() {
    let (dir, io) = reference_with(
        "layer_bf16_shards",
        TINY,
        &["--checkpoint-dtype=bfloat16", "--max-shard-size=20KB"],
    );
    assert!(dir.join("model.safetensors.index.json").exists());
    assert!(!dir.join("model.safetensors").exists());
    let model = AutoModelForCausalLM::from_pretrained(&dir, None, tch::Device::Cpu).unwrap();
    assert!(
        model
            .named_parameters()
            .iter()
            .all(|(_, t)| t.kind() == Kind::BFloat16)
    );
    let llama = LlamaForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        llama
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    let (_, worst) = check_two_steps_within("layer_bf16_shards", &io, &step, false, 1e-6);
    eprintln!("bf16 sharded checkpoint: largest logits discrepancy {worst:e}");
    // Asked for float32, the same checkpoint converts.
    let f32 =
        AutoModelForCausalLM::from_pretrained(&dir, Some(Kind::Float), tch::Device::Cpu).unwrap();
    assert!(
        f32.named_parameters()
            .iter()
            .all(|(_, t)| t.kind() == Kind::Float)
    );
}

#[test]
fn untrained_weights_are_the_same_bytes_on_any_thread() {
    let build = |seed: i64| {
        std::thread::spawn(move || {
            let cfg = Config::from_json(TINY).unwrap();
            let mut w = Weights::untrained("LlamaForCausalLM", seed, cfg.initializer_range);
            LlamaForCausalLM::new(cfg, &mut w)
                .unwrap()
                .named_parameters()
                .into_iter()
                .map(|(n, t)| (n, t.into_tch()))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    // libtorch's global generator, disturbed between the builds, plays no part.
    let a = build(42);
    tch::manual_seed(123);
    let _ = tch::Tensor::randn([100], (Kind::Float, tch::Device::Cpu));
    let b = build(42);
    let c = build(43);
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between threads");
    }
    let differ = a
        .iter()
        .zip(&c)
        .filter(|((_, ta), (_, tc))| !ta.equal(tc))
        .count();
    // Linear and embedding weights differ with the seed; norms (ones) do not.
    assert_eq!(
        differ,
        2 + 2 * 7,
        "embedding, lm_head, and per layer q/k/v/o/gate/up/down"
    );
    // transformers' _init_weights: N(0, 0.02) weights, unit norms, the padding row at zero.
    let get = |n: &str| &a.iter().find(|(m, _)| m == n).unwrap().1;
    let embed = get("model.embed_tokens.weight");
    assert_eq!(embed.get(0).abs().sum(Kind::Float).double_value(&[]), 0.0);
    let std = embed.narrow(0, 1, 95).std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 2e-3, "{std}");
    assert!(get("model.norm.weight").eq(1.0).all().int64_value(&[]) == 1);
}
