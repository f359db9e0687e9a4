//! Conversions between libtorch tensors, ONNX `TensorProto`s and the runner's host tensors.

use tch::Kind;

use crate::{
    proto::{self, tensor_proto::DataType},
    runtime::{HostTensor, TensorData},
};

/// The ONNX element type of a libtorch element type.
pub fn data_type(kind: Kind) -> Option<DataType> {
    Some(match kind {
        Kind::Float => DataType::Float,
        Kind::Double => DataType::Double,
        Kind::Half => DataType::Float16,
        Kind::BFloat16 => DataType::Bfloat16,
        Kind::Int64 => DataType::Int64,
        Kind::Int => DataType::Int32,
        Kind::Int16 => DataType::Int16,
        Kind::Int8 => DataType::Int8,
        Kind::Uint8 => DataType::Uint8,
        Kind::Bool => DataType::Bool,
        _ => return None,
    })
}

/// A short suffix for constant names (`f32`, `i64`).
pub(crate) fn kind_suffix(kind: Kind) -> &'static str {
    onnx_diagnostic_core::graph::kind_short(kind)
}

/// A `TensorProto` holding the tensor's elements as little-endian raw data.
///
/// # Errors
/// A message when the element type has no ONNX counterpart.
pub fn tensor_proto(t: &tch::Tensor, name: &str) -> Result<proto::TensorProto, String> {
    let kind = t.kind();
    let dt = data_type(kind).ok_or_else(|| format!("element type {kind:?} has no ONNX type"))?;
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(|e| e.to_string())?;
    let numel = t.numel();
    let mut raw = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut raw, numel)
        .map_err(|e| e.to_string())?;
    Ok(proto::TensorProto {
        dims: t.size(),
        data_type: Some(dt as i32),
        name: Some(name.to_owned()),
        raw_data: Some(raw),
        ..Default::default()
    })
}

/// A host tensor from a libtorch tensor (float32/64, float16, bfloat16, int64/32/8, uint8,
/// bool).
///
/// # Errors
/// A message when the element type is not one the runner feeds.
pub fn host_tensor(t: &tch::Tensor) -> Result<HostTensor, String> {
    let shape = t.size();
    let flat = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_reshape([-1]))
        .map_err(|e| e.to_string())?;
    let err = |e: tch::TchError| e.to_string();
    let data = match t.kind() {
        Kind::Float => TensorData::F32(Vec::<f32>::try_from(&flat).map_err(err)?),
        Kind::Double => TensorData::F64(Vec::<f64>::try_from(&flat).map_err(err)?),
        Kind::Int64 => TensorData::I64(Vec::<i64>::try_from(&flat).map_err(err)?),
        Kind::Int => TensorData::I32(Vec::<i32>::try_from(&flat).map_err(err)?),
        Kind::Bool => TensorData::Bool(Vec::<bool>::try_from(&flat).map_err(err)?),
        // Through the raw bits: tch 0.26 declares `half::bf16` as Kind::Half.
        Kind::Half => TensorData::F16(
            raw_u16(&flat)?
                .into_iter()
                .map(half::f16::from_bits)
                .collect(),
        ),
        Kind::BFloat16 => TensorData::BF16(
            raw_u16(&flat)?
                .into_iter()
                .map(half::bf16::from_bits)
                .collect(),
        ),
        Kind::Int8 => TensorData::I8(Vec::<i8>::try_from(&flat).map_err(err)?),
        Kind::Uint8 => TensorData::U8(Vec::<u8>::try_from(&flat).map_err(err)?),
        other => {
            return Err(format!(
                "element type {other:?} is not fed to ONNX Runtime yet"
            ));
        }
    };
    Ok(HostTensor { shape, data })
}

/// The elements of a 2-byte tensor as their bits.
fn raw_u16(flat: &tch::Tensor) -> Result<Vec<u16>, String> {
    let n = flat.numel();
    let mut bytes = vec![0u8; 2 * n];
    flat.f_copy_data_u8(&mut bytes, n)
        .map_err(|e| e.to_string())?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// A 2-byte tensor of `kind` from the bits of its elements.
fn from_u16(
    bits: impl Iterator<Item = u16>,
    shape: &[i64],
    kind: Kind,
) -> Result<tch::Tensor, String> {
    let bytes: Vec<u8> = bits.flat_map(u16::to_le_bytes).collect();
    tch::Tensor::f_from_data_size(&bytes, shape, kind).map_err(|e| e.to_string())
}

/// A libtorch tensor from a host tensor.
///
/// # Errors
/// A message when the shape does not match the number of elements.
pub fn from_host(h: &HostTensor) -> Result<tch::Tensor, String> {
    let t = match &h.data {
        TensorData::F32(v) => tch::Tensor::from_slice(v),
        TensorData::F64(v) => tch::Tensor::from_slice(v),
        TensorData::I64(v) => tch::Tensor::from_slice(v),
        TensorData::I32(v) => tch::Tensor::from_slice(v),
        TensorData::Bool(v) => tch::Tensor::from_slice(v),
        TensorData::F16(v) => from_u16(v.iter().map(|x| x.to_bits()), &h.shape, Kind::Half)?,
        TensorData::BF16(v) => from_u16(v.iter().map(|x| x.to_bits()), &h.shape, Kind::BFloat16)?,
        TensorData::I8(v) => tch::Tensor::from_slice(v),
        TensorData::U8(v) => tch::Tensor::from_slice(v),
    };
    t.f_reshape(h.shape.as_slice()).map_err(|e| e.to_string())
}
