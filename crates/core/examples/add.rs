//! The seed example: `x + y` exported with dynamic shapes, printed like torch.export prints it.
//!
//! `cargo run -p onnx-diagnostic-core --example add`

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, ExportOptions, Inputs, Module, Tensor, Value, export,
};

struct Model;

impl Module for Model {
    fn class_name(&self) -> String {
        "Model".to_owned()
    }
    fn forward_signature(&self) -> Vec<String> {
        vec!["x".to_owned(), "y".to_owned()]
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    fn forward(&self, inputs: &Inputs) -> onnx_diagnostic_core::Result<Value> {
        Ok(inputs.tensor("x")?.add(inputs.tensor("y")?)?.into())
    }
}

fn main() -> anyhow::Result<()> {
    let x = tch::Tensor::randn([5, 6], (tch::Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::randn([1, 6], (tch::Kind::Float, tch::Device::Cpu));
    let args = [Value::from(x), Value::from(y)];
    let ep = export(&Model, &args, &[], None, &ExportOptions::default())?;
    println!("{ep}");
    let ds = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::DYNAMIC), (1, Dim::DYNAMIC)]),
            DynSpec::dims([(1, Dim::DYNAMIC)]),
        ],
        kwargs: Vec::new(),
    };
    let ep = export(&Model, &args, &[], Some(&ds), &ExportOptions::default())?;
    println!("{ep}");
    Ok(())
}
