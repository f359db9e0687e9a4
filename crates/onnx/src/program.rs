//! An ONNX model of an exported program, loaded in ONNX Runtime and called like the program:
//! nested inputs are flattened into feeds by input name, outputs are unflattened back through
//! the program's output structure.

use std::path::Path;

use onnx_diagnostic_core::{ExportedProgram, Tensor, TreeSpec, Value};
use prost::Message;

use crate::{
    convert, proto,
    runtime::{OrtError, Provider, Session},
};

/// A lowered program in an ONNX Runtime session.
#[derive(Debug)]
pub struct OnnxProgram {
    session: Session,
    signature: Vec<String>,
    output_spec: TreeSpec,
}

impl OnnxProgram {
    /// A session over `model` (in memory) for the program it was lowered from.
    ///
    /// # Errors
    /// [`OrtError::Session`] with ONNX Runtime's message.
    pub fn from_model(model: &proto::ModelProto, ep: &ExportedProgram) -> Result<Self, OrtError> {
        Self::from_model_on(model, ep, Provider::Cpu)
    }

    /// A session over `model` (in memory) on `provider`.
    ///
    /// # Errors
    /// [`OrtError::Provider`] when the runtime lacks the provider; [`OrtError::Session`] with
    /// ONNX Runtime's message.
    pub fn from_model_on(
        model: &proto::ModelProto,
        ep: &ExportedProgram,
        provider: Provider,
    ) -> Result<Self, OrtError> {
        Ok(Self {
            session: Session::from_bytes_on(&model.encode_to_vec(), provider)?,
            signature: ep.signature().to_vec(),
            output_spec: ep.output_spec().clone(),
        })
    }

    /// A session over a saved model file (external data beside it).
    ///
    /// # Errors
    /// [`OrtError::Session`] with ONNX Runtime's message and the path.
    pub fn from_file(path: &Path, ep: &ExportedProgram) -> Result<Self, OrtError> {
        Self::from_file_on(path, ep, Provider::Cpu)
    }

    /// A session over a saved model file on `provider` (CUDA when the runtime has it).
    ///
    /// # Errors
    /// [`OrtError::Provider`] when the runtime lacks the provider; [`OrtError::Session`] with
    /// ONNX Runtime's message and the path.
    pub fn from_file_on(
        path: &Path,
        ep: &ExportedProgram,
        provider: Provider,
    ) -> Result<Self, OrtError> {
        Ok(Self {
            session: Session::from_file_on(path, provider)?,
            signature: ep.signature().to_vec(),
            output_spec: ep.output_spec().clone(),
        })
    }

    /// [`OnnxProgram::from_file_on`] with ONNX Runtime's graph optimizations off (see
    /// [`Session::from_file_unoptimized_on`]).
    ///
    /// # Errors
    /// As [`OnnxProgram::from_file_on`].
    pub fn from_file_unoptimized_on(
        path: &Path,
        ep: &ExportedProgram,
        provider: Provider,
    ) -> Result<Self, OrtError> {
        Ok(Self {
            session: Session::from_file_unoptimized_on(path, provider)?,
            signature: ep.signature().to_vec(),
            output_spec: ep.output_spec().clone(),
        })
    }

    /// Runs the model on the arguments of a call of the program.
    ///
    /// # Errors
    /// [`OrtError::Run`] when an input cannot be fed (unknown keyword, unsupported element
    /// type), when ONNX Runtime fails, or when the outputs do not fit the output structure.
    pub fn run(&mut self, args: &[Value], kwargs: &[(String, Value)]) -> Result<Value, OrtError> {
        let origin = format!("{:?}", self.session);
        let fail = |message: String| OrtError::Run {
            origin: origin.clone(),
            message,
        };
        let mut bound: Vec<(String, &Value)> = self
            .signature
            .iter()
            .zip(args)
            .map(|(n, v)| (n.clone(), v))
            .collect();
        for (name, v) in kwargs {
            if !self.signature.contains(name) {
                return Err(fail(format!("unknown keyword argument {name:?}")));
            }
            bound.push((name.clone(), v));
        }
        let wanted = self.session.input_names();
        let mut feeds = Vec::new();
        for (name, value) in bound {
            for (leaf, tensor) in value.flatten(&name).map_err(|e| fail(e.to_string()))?.0 {
                if !wanted.contains(&leaf) {
                    continue; // an input the graph does not read (ONNX drops it)
                }
                let host = convert::host_tensor(tensor.as_tch())
                    .map_err(|m| fail(format!("input {leaf}: {m}")))?;
                feeds.push((leaf, host));
            }
        }
        let feeds_ref: Vec<(&str, _)> =
            feeds.iter().map(|(n, h)| (n.as_str(), h.clone())).collect();
        let outputs = self.session.run(&feeds_ref)?;
        let tensors = outputs
            .iter()
            .map(|(name, h)| {
                convert::from_host(h)
                    .map(Tensor::from)
                    .map_err(|m| fail(format!("output {name}: {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.output_spec
            .unflatten(tensors)
            .map_err(|e| fail(e.to_string()))
    }
}
