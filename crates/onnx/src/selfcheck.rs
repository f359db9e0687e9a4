//! A self-check of the set-up: libtorch and ONNX Runtime load in one process and compute the same
//! `x + y`. `onnx-diagnostic doctor` prints it; the smoke test asserts it.

use prost::Message;

use crate::{
    proto,
    runtime::{HostTensor, OrtError, Session, TensorData},
};

/// Errors of the self-check.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    /// libtorch failed.
    #[error("libtorch failed computing x + y: {0}")]
    Torch(#[from] tch::TchError),
    /// ONNX Runtime failed.
    #[error(transparent)]
    Runtime(#[from] OrtError),
    /// ONNX Runtime returned something else than one float tensor.
    #[error("ONNX Runtime returned {0} instead of one float tensor")]
    UnexpectedOutput(String),
}

/// What the self-check computed.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfCheck {
    /// `x + y` computed by libtorch.
    pub torch: Vec<f32>,
    /// `x + y` computed by ONNX Runtime.
    pub onnxruntime: Vec<f32>,
    /// The largest absolute difference between both.
    pub max_abs_diff: f32,
}

/// A one-node ONNX model `z = x + y` on float tensors of shape `[batch, 3]`.
pub fn add_model() -> proto::ModelProto {
    let value = |name: &str| proto::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(proto::tensor_proto::DataType::Float as i32),
                    shape: Some(proto::TensorShapeProto {
                        dim: vec![
                            proto::tensor_shape_proto::Dimension {
                                value: Some(proto::tensor_shape_proto::dimension::Value::DimParam(
                                    "batch".to_owned(),
                                )),
                                ..Default::default()
                            },
                            proto::tensor_shape_proto::Dimension {
                                value: Some(proto::tensor_shape_proto::dimension::Value::DimValue(
                                    3,
                                )),
                                ..Default::default()
                            },
                        ],
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    proto::ModelProto {
        ir_version: Some(crate::ir_version_for_opset(18)),
        producer_name: Some("onnx-diagnostic".to_owned()),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        graph: Some(proto::GraphProto {
            name: Some("doctor".to_owned()),
            node: vec![proto::NodeProto {
                input: vec!["x".to_owned(), "y".to_owned()],
                output: vec!["z".to_owned()],
                op_type: Some("Add".to_owned()),
                name: Some("/Add".to_owned()),
                ..Default::default()
            }],
            input: vec![value("x"), value("y")],
            output: vec![value("z")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Computes `x + y` on two `[2, 3]` float tensors with libtorch and with ONNX Runtime.
///
/// # Errors
/// [`SelfCheckError`] when either library fails.
pub fn run() -> Result<SelfCheck, SelfCheckError> {
    let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..6).map(|i| 1.0 - i as f32 * 0.25).collect();
    let tx = tch::Tensor::f_from_slice(&x)?.f_reshape([2, 3])?;
    let ty = tch::Tensor::f_from_slice(&y)?.f_reshape([2, 3])?;
    let torch = Vec::<f32>::try_from(tx.f_add(&ty)?.f_flatten(0, -1)?)?;

    let mut session = Session::from_bytes(&add_model().encode_to_vec())?;
    let feed = |v: &[f32]| HostTensor {
        shape: vec![2, 3],
        data: TensorData::F32(v.to_vec()),
    };
    let mut outputs = session.run(&[("x", feed(&x)), ("y", feed(&y))])?;
    let onnxruntime = match outputs.pop() {
        Some((
            _,
            HostTensor {
                data: TensorData::F32(v),
                ..
            },
        )) if outputs.is_empty() => v,
        other => return Err(SelfCheckError::UnexpectedOutput(format!("{other:?}"))),
    };
    let max_abs_diff = if torch.len() == onnxruntime.len() {
        torch
            .iter()
            .zip(&onnxruntime)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    } else {
        f32::INFINITY
    };
    Ok(SelfCheck {
        torch,
        onnxruntime,
        max_abs_diff,
    })
}
