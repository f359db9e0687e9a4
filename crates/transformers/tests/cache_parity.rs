//! The cache layers against transformers' (`cache_utils`, run from the venv): the same updates
//! give the same returned states, the same stored states and the same seen length after every
//! step, then the same reordered batch (beam search) and crop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::HashMap, path::PathBuf, process::Command};

use onnx_diagnostic_core::Tensor;
use onnx_diagnostic_transformers::{CacheLayer, LayerKind};

fn same(name: &str, ours: &Tensor, theirs: &tch::Tensor) {
    assert_eq!(ours.concrete_shape(), theirs.size(), "{name}: shapes");
    assert!(ours.as_tch().equal(theirs), "{name}: values differ");
}

#[test]
fn cache_layers_match_transformers_update_by_update() {
    // Updates of 3, 1, 2, 1, 1 positions: the dynamic window of 4 is full from the second
    // one, the static layer of 8 ends exactly full, the static sliding layer (4 positions)
    // fills on the second and rolls afterwards.
    let sizes = [3, 1, 2, 1, 1];
    let mut steps: Vec<(String, tch::Tensor)> = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        steps.push((
            format!("k_{i}"),
            tch::Tensor::randn([2, 2, *n, 3], tch::kind::FLOAT_CPU),
        ));
        steps.push((
            format!("v_{i}"),
            tch::Tensor::randn([2, 2, *n, 3], tch::kind::FLOAT_CPU),
        ));
    }
    steps.push(("beam_idx".to_owned(), tch::Tensor::from_slice(&[1i64, 0])));
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache_parity");
    std::fs::create_dir_all(&root).unwrap();
    let steps_path = root.join("steps.safetensors");
    let out_path = root.join("reference.safetensors");
    tch::Tensor::write_safetensors(
        &steps
            .iter()
            .map(|(k, t)| (k.as_str(), t))
            .collect::<Vec<_>>(),
        &steps_path,
    )
    .unwrap();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new(manifest.join("../../.venv/bin/python"))
        .arg(manifest.join("tests/parity/cache_reference.py"))
        .arg(&steps_path)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&out_path)
        .unwrap()
        .into_iter()
        .collect();
    let steps: HashMap<String, tch::Tensor> = steps.into_iter().collect();
    let t = |k: &str| Tensor::from(steps[k].shallow_clone());

    for (name, kind) in [
        ("dynamic", LayerKind::Dynamic),
        ("dynamic_sliding", LayerKind::DynamicSlidingWindow(4)),
        ("static", LayerKind::Static(8)),
        ("static_sliding", LayerKind::StaticSlidingWindow(8, 4)),
    ] {
        let mut layer = kind.layer();
        for i in 0..sizes.len() {
            let (k, v) = layer
                .update(&t(&format!("k_{i}")), &t(&format!("v_{i}")))
                .unwrap();
            same(
                &format!("{name} returned keys {i}"),
                &k,
                &theirs[&format!("{name}_ret_k_{i}")],
            );
            same(
                &format!("{name} returned values {i}"),
                &v,
                &theirs[&format!("{name}_ret_v_{i}")],
            );
            same(
                &format!("{name} stored keys {i}"),
                layer.keys().unwrap(),
                &theirs[&format!("{name}_keys_{i}")],
            );
            same(
                &format!("{name} stored values {i}"),
                layer.values().unwrap(),
                &theirs[&format!("{name}_values_{i}")],
            );
            assert_eq!(
                layer.get_seq_length().unwrap().hint(),
                theirs[&format!("{name}_len_{i}")].int64_value(&[]),
                "{name} seq length {i}"
            );
        }
        layer.reorder(&t("beam_idx")).unwrap();
        same(
            &format!("{name} reordered"),
            layer.keys().unwrap(),
            &theirs[&format!("{name}_reordered_keys")],
        );
    }

    let mut crop = LayerKind::Dynamic.layer();
    for i in 0..sizes.len() {
        crop.update(&t(&format!("k_{i}")), &t(&format!("v_{i}")))
            .unwrap();
    }
    crop.crop(2).unwrap();
    same(
        "cropped",
        crop.keys().unwrap(),
        &theirs["dynamic_cropped_keys"],
    );
    assert_eq!(
        crop.get_seq_length().unwrap().hint(),
        theirs["dynamic_cropped_len"].int64_value(&[])
    );
    // A full sliding-window layer cannot be cropped, as in transformers.
    let mut full = LayerKind::DynamicSlidingWindow(2).layer();
    full.update(&t("k_0"), &t("v_0")).unwrap();
    let err = full.crop(1).unwrap_err();
    assert!(err.to_string().contains("cannot be cropped"), "{err}");
    assert!(matches!(full, CacheLayer::DynamicSlidingWindow(_)));
}
