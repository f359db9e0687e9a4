//! `validate` without a model lists the tasks; `validate -t TASK` prints the task's input sets
//! and dynamic shapes. Both are compared with onnx-diagnostic 0.9.3 (the oracle): every line
//! is the package's `string_type` of the set itself, and the sets are the ones the package's
//! `get_untrained_model_with_inputs` makes for the task's model, but for the decisions of ours
//! each comparison names (docs/decisions.md, the task modules' docs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::HashMap, process::Command};

use onnx_diagnostic_core::{StringTypeOptions, Value};
use onnx_diagnostic_testing::oracle::Oracle;

/// The tasks `validate` runs, in the order it lists them.
const TASKS: [&str; 7] = [
    "text-generation",
    "text2text-generation",
    "feature-extraction",
    "summarization",
    "text-to-image",
    "image-text-to-text",
    "mask-generation",
];

/// `onnx-diagnostic validate ARGS`, which must succeed: its stdout.
fn validate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The `NAME: TEXT` lines of `validate -t TASK`.
fn described(task: &str) -> HashMap<String, String> {
    validate(&["-t", task])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The size `name:T7s{batch}x{len}` gives its second dimension in a printed set.
fn second_dim(text: &str, name: &str) -> i64 {
    let at = text.find(&format!("{name}:T7s")).unwrap() + name.len() + 4;
    let dims: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == 'x')
        .collect();
    dims.split('x').nth(1).unwrap().parse().unwrap()
}

/// `text` with every float tensor `T1s{a}x{b}x{c}x{d}` from `from` on rewritten by `f`.
fn map_cache_tensors(text: &str, from: usize, f: &dyn Fn(&mut [i64])) -> String {
    let mut out = text[..from].to_owned();
    let mut rest = &text[from..];
    while let Some(at) = rest.find("T1s") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit() && c != 'x')
            .unwrap_or(rest.len());
        let mut dims: Vec<i64> = rest[..len].split('x').map(|d| d.parse().unwrap()).collect();
        f(&mut dims);
        let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
        out.push_str(&dims.join("x"));
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// The package's set or dynamic shapes of an encoder-decoder task with our decisions
/// (crates/transformers/src/tasks/text2text_generation.rs): the cross-attention cache holds
/// the encoder's states of the source (as many positions as `input_ids`), every cache state is
/// `d_model / decoder_attention_heads` wide (the package's summarization sets take 64, which
/// its own model refuses), and the dimensions equal to the source's length carry its name;
/// the feature-extraction and summarization `inputs2` has one more cached token (the package
/// keeps 30), so that every dimension named dynamic changes between the sets
/// (crates/transformers/src/tasks/feature_extraction.rs).
fn as_our_encoder_decoder_sets(task: &str, name: &str, text: &str, head_dim: i64) -> String {
    if name == "dynamic_shapes" {
        let at = text.find("input_ids:{0:DYN(batch),1:DYN(").unwrap() + 30;
        let source = &text[at..at + text[at..].find(')').unwrap()];
        return text
            .replace("DYN(seq_mask)", &format!("DYN({source})"))
            .replace("DYN(cache_length_val)", &format!("DYN({source})"));
    }
    if !text.contains("EncoderDecoderCache") {
        return text.to_owned();
    }
    let source = second_dim(text, "input_ids");
    let grown = i64::from(name == "inputs2" && task != "text2text-generation");
    let text = map_cache_tensors(text, 0, &|d| {
        d[3] = head_dim;
        d[2] += grown;
    });
    let cross = text.find("cross_attention_cache=").unwrap();
    map_cache_tensors(&text, cross, &|d| d[2] = source)
}

/// The decoder's head size of a catalog encoder-decoder.
fn decoder_head_dim(model_id: &str) -> i64 {
    let c: serde_json::Value =
        serde_json::from_str(onnx_diagnostic_transformers::catalog::config_json(model_id).unwrap())
            .unwrap();
    c["d_model"].as_i64().unwrap() / c["decoder_attention_heads"].as_i64().unwrap()
}

#[test]
fn the_tasks_are_listed() {
    assert_eq!(validate(&[]).trim(), TASKS.join("\n"));
}

/// Every line `-t TASK` prints is the package's `string_type` (with shapes) of the set
/// itself, for every task; and the sets are the package's own where it makes sets the task's
/// model runs on.
#[test]
fn every_task_prints_the_packages_string_type_of_the_packages_sets() {
    let printed: Vec<HashMap<String, String>> = TASKS.iter().map(|t| described(t)).collect();
    let mut o = Oracle::new();
    let with_shape = StringTypeOptions::with_shape();
    let mut ours = Vec::new();
    let mut packages: Vec<(&str, &str, usize)> = Vec::new();
    for task in TASKS {
        let sets = onnx_diagnostic_cli::task_sets(task).unwrap();
        for (name, set) in sets.sets {
            ours.push((task, name, o.string_type(&Value::Dict(set), &with_shape)));
        }
        // The package's sets for the task's model, where the model runs on them (not
        // Qwen2-VL: its generic image-text-to-text sets give images as [n, 3, 224, 224] and
        // two image tokens, which Qwen2-VL's patch inputs refuse, "Image features and image
        // tokens do not match").
        if task != "image-text-to-text" {
            packages.push((task, sets.model_id, o.task_sets(sets.model_id, task)));
        }
    }
    assert_eq!(packages.len(), 6);
    let answers = o.run();

    for (task, name, i) in &ours {
        let t = TASKS.iter().position(|x| x == task).unwrap();
        assert_eq!(
            printed[t].get(name).map(String::as_str),
            Some(answers[*i].text()),
            "{task}: {name}"
        );
    }
    for (task, id, i) in packages {
        let t = TASKS.iter().position(|x| *x == task).unwrap();
        let python = answers[i].json().as_object().unwrap();
        assert!(python.contains_key("inputs") && python.contains_key("dynamic_shapes"));
        for (name, text) in python {
            let text = text.as_str().unwrap();
            let expected = match task {
                "text2text-generation" | "feature-extraction" | "summarization" => {
                    as_our_encoder_decoder_sets(task, name, text, decoder_head_dim(id))
                }
                // Height and width are dynamic: one ONNX file serves every resolution
                // (crates/diffusers/src/text_to_image.rs).
                "text-to-image" => text.replace(
                    "sample:{0:DYN(batch)}",
                    "sample:{0:DYN(batch),2:DYN(height),3:DYN(width)}",
                ),
                _ => text.to_owned(),
            };
            let got = printed[t].get(name.as_str()).cloned().unwrap_or_default();
            // Ours prints the (args, kwargs) pair the export takes.
            let got = match name.as_str() {
                "dynamic_shapes" => got
                    .strip_prefix("((),")
                    .and_then(|g| g.strip_suffix(')'))
                    .unwrap_or(&got)
                    .to_owned(),
                _ => got,
            };
            assert_eq!(got, expected, "{task} ({id}): {name}");
        }
    }
}

/// The sets of ours beyond the package's: SAM's `inputs_points` (another number of prompts
/// and points), the UNet's other resolutions, Qwen2-VL's sets (two images, none, a prompt
/// with three), each consistent with what the model computes from it.
#[test]
fn the_sets_beyond_the_packages_are_consistent() {
    let sam = described("mask-generation");
    let points = &sam["inputs_points"];
    assert!(points.contains("input_points:T1s1x3x4x2"), "{points}");

    let unet = described("text-to-image");
    let sizes = |set: &str| {
        let text = &unet[set];
        let at = text.find("sample:T1s").unwrap() + 10;
        let dims: Vec<i64> = text[at..text[at..].find(',').unwrap() + at]
            .split('x')
            .map(|d| d.parse().unwrap())
            .collect();
        dims
    };
    // From the sample size of `inputs`: + 8 by + 16 (the scale-2 path), + 1 by + 3 (the skip
    // sizes).
    let side = sizes("inputs")[2];
    assert_eq!(sizes("inputs_resolution")[2..], [side + 8, side + 16]);
    assert_eq!(sizes("inputs_odd_resolution")[2..], [side + 1, side + 3]);

    // Qwen2-VL: as many patch rows as the grids hold (t * h * w per image), positions for the
    // three rope sections, the mask spanning cache and new tokens.
    let vl = onnx_diagnostic_cli::task_sets("image-text-to-text").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        onnx_diagnostic_transformers::catalog::config_json(vl.model_id).unwrap(),
    )
    .unwrap();
    let image_token = config["image_token_id"].as_i64().unwrap();
    let merge = config["vision_config"]["spatial_merge_size"]
        .as_i64()
        .unwrap();
    let mut names = Vec::new();
    for (name, set) in &vl.sets {
        names.push(name.as_str());
        let get = |key: &str| {
            set.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::None)
        };
        let size = |v: &Value| match v {
            Value::Tensor(t) => t.as_tch().size(),
            _ => panic!("{name}: not a tensor"),
        };
        let grid = match get("image_grid_thw") {
            Value::Tensor(t) => t.as_tch().shallow_clone(),
            _ => panic!("{name}: no image_grid_thw"),
        };
        let patches: i64 = grid.prod_dim_int(1, false, None).sum(None).int64_value(&[]);
        assert_eq!(size(&get("pixel_values"))[0], patches, "{name}");
        let ids = size(&get("input_ids"));
        // Each merged block of `merge` x `merge` patches is one image token of the prompt.
        let image_tokens = match get("input_ids") {
            Value::Tensor(t) => t
                .as_tch()
                .eq(image_token)
                .sum(tch::Kind::Int64)
                .int64_value(&[]),
            _ => unreachable!(),
        };
        assert_eq!(image_tokens * merge * merge, patches, "{name}");
        if let Value::Tensor(p) = get("position_ids") {
            assert_eq!(p.as_tch().size(), [3, ids[0], ids[1]], "{name}");
        }
        if let Value::Custom(c) = get("past_key_values") {
            let cached = match &c.fields()[0].1 {
                Value::List(keys) => size(&keys[0])[2],
                _ => panic!("{name}: no key_cache"),
            };
            assert_eq!(
                size(&get("attention_mask")),
                [ids[0], cached + ids[1]],
                "{name}"
            );
        }
    }
    assert_eq!(
        names,
        ["inputs", "inputs2", "inputs_images", "inputs_prompt"]
    );
}
