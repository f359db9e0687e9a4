//! `onnx-diagnostic rewrite`: the known rewritings of an architecture (seed `002`'s
//! `code_needing_rewriting`) and the rewritten code and diff of a method of any Rust file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

/// `onnx-diagnostic rewrite ARGS`.
fn run(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["rewrite"];
    all.extend_from_slice(args);
    common::run(&all)
}

/// The list is printed as the seeds' `pprint` prints it, the functions and the pre-rewriter by
/// name (`ast_or_into_bitor` is `or_into_bitor` here): the methods those of onnx-diagnostic
/// 0.9.3's `code_needing_rewriting` (run by `onnx_diagnostic_testing::oracle`).
#[test]
fn known_rewritings_are_listed_as_the_seeds_print_them() {
    let mut o = onnx_diagnostic_testing::oracle::Oracle::new();
    let i = o.code_needing_rewriting(&["BartForConditionalGeneration"]);
    let answers = o.run();
    let items: Vec<String> = answers[i].json()["rewrites"]["BartForConditionalGeneration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{{'filter_node': 'clamp_float16', 'function': '{}', 'pre_rewriter': '{}'}}",
                r[0].as_str().unwrap(),
                r[1].as_str().unwrap().trim_start_matches("ast_")
            )
        })
        .collect();
    assert_eq!(items.len(), 2);
    let (ok, out, _) = run(&["--known", "BartForConditionalGeneration"]);
    assert!(ok);
    let (list, rewritten) = out.split_once("\n\n").unwrap();
    assert_eq!(list, format!("[{}]", items.join(",\n ")));
    // Then the diff of the method this build rewrites for it (PLBart's layer is Bart's): the
    // clamp's test and assignment move into a cond, the two tests joined by `or_into_bitor`.
    assert!(
        rewritten.starts_with("rewritten_BartEncoderLayer.forward (BartEncoderLayer.forward):"),
        "{rewritten}"
    );
    assert!(rewritten.contains("--- original") && rewritten.contains("+++ rewritten"));
    assert!(
        rewritten.contains("-    if h.kind() == Kind::Half") && rewritten.contains("cond"),
        "{rewritten}"
    );
    assert_eq!(
        rewritten
            .matches("rewritten_BartEncoderLayer.forward")
            .count(),
        1,
        "one struct for both classes"
    );
    assert_eq!(run(&["--known", "LlamaForCausalLM"]).1, "[]\n");
}

#[test]
fn a_method_of_a_file_is_rewritten_with_its_diff() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../rewrite/tests/rewrite.rs");
    let (ok, out, err) = run(&[
        file,
        "--method",
        "ToyEncoderLayer::forward",
        "--or-into-bitor",
    ]);
    assert!(ok, "{err}");
    let (code, diff) = out.split_once("\n\n--- original\n").unwrap();
    assert!(
        code.starts_with("pub fn forward(&self, h: &Tensor) -> Result<Tensor> {"),
        "{code}"
    );
    assert!(
        code.contains(
            "::onnx_diagnostic_core::Cond::from_bool(\n            hidden_states.kind() == Kind::Half,"
        ),
        "{code}"
    );
    assert!(code.contains(".logical_or("), "{code}");
    assert!(diff.starts_with("+++ rewritten\n@@ "), "{diff}");
    assert!(
        diff.contains("\n-    if hidden_states.kind() == Kind::Half"),
        "{diff}"
    );
    assert!(
        diff.contains("\n+    let hidden_states = ::onnx_diagnostic_core::cond_value::<"),
        "{diff}"
    );
    // A loop over a dimension becomes for_range (a scan).
    let (ok, out, err) = run(&[file, "--method", "Toy::loops"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\n-    for i in 0..x.size(0)?.guard_int()? {\n")
            && out.contains(
                "\n+    let (mut dist, mut total) = ::onnx_diagnostic_core::for_range::<\n"
            ),
        "{out}"
    );
    let (ok, _, err) = run(&[file, "--method", "Toy::missing"]);
    assert!(
        !ok && err.contains("method Toy::missing not found"),
        "{err}"
    );
}
