//! The cache layers against transformers' (`cache_utils`, run from the venv): the same updates
//! give the same returned states, the same stored states and the same seen length after every
//! step, then the same reordered batch (beam search) and crop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::HashMap, path::PathBuf, process::Command};

use onnx_diagnostic_core::{SymInt, Tensor};
use onnx_diagnostic_transformers::{CacheLayer, KeyPositions, LayerKind};

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
        let mut seen = 0;
        for (i, n) in sizes.iter().enumerate() {
            let positions = Tensor::from(tch::Tensor::arange_start(
                seen,
                seen + n,
                tch::kind::INT64_CPU,
            ));
            let keys = layer
                .key_positions(&SymInt::new(seen), &SymInt::new(*n), &positions)
                .unwrap();
            let (k, v) = layer
                .update(&t(&format!("k_{i}")), &t(&format!("v_{i}")))
                .unwrap();
            let (rk, rv) = (
                &theirs[&format!("{name}_ret_k_{i}")],
                &theirs[&format!("{name}_ret_v_{i}")],
            );
            match keys {
                KeyPositions::Slots {
                    positions,
                    valid: Some(valid),
                } => {
                    // The static sliding layer returns its slots and the new states (no
                    // branch, for the export); transformers returns one of three layouts. The
                    // states of every position both read must be the same.
                    let offset = theirs[&format!("{name}_ret_offset_{i}")].int64_value(&[]);
                    let pos = Vec::<i64>::try_from(positions.as_tch()).unwrap();
                    let ok = Vec::<bool>::try_from(valid.as_tch()).unwrap();
                    let mut matched = 0;
                    for (e, (&p, &good)) in pos.iter().zip(&ok).enumerate() {
                        if !good || p < offset || p >= seen + n {
                            continue;
                        }
                        for (ours, th) in [(&k, rk), (&v, rv)] {
                            assert!(
                                ours.as_tch().narrow(2, e as i64, 1).equal(&th.narrow(
                                    2,
                                    p - offset,
                                    1
                                )),
                                "{name} update {i}: the state of position {p} differs"
                            );
                        }
                        matched += 1;
                    }
                    let written = rk.size()[2].min(seen + n - offset);
                    assert_eq!(matched, written, "{name} update {i}: positions read");
                }
                _ => {
                    same(&format!("{name} returned keys {i}"), &k, rk);
                    same(&format!("{name} returned values {i}"), &v, rv);
                }
            }
            seen += n;
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
