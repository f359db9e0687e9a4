//! ONNX Runtime runner over `ort` with `load-dynamic`.
//!
//! The runtime library is the `libonnxruntime.so.1.31.1` of the `onnxruntime` wheel, loaded at
//! run time. [`runtime_library`] finds it, in this order (the first that applies wins):
//! 1. the `ORT_DYLIB_PATH` variable at run time: when set, it is the library, and a path that
//!    does not exist is an error naming it (no fall-through to another library);
//! 2. next to the binary: `libonnxruntime.so` in the executable's directory, then in `../lib`
//!    (the layout `scripts/install PREFIX` writes: `PREFIX/bin`, `PREFIX/lib`);
//! 3. the project's virtualenv: the path `.cargo/config.toml` gave at build time
//!    (`.venv/libs/libonnxruntime.so` of the checkout), when that file exists;
//! 4. the system: the bare name `libonnxruntime.so`, which the dynamic loader looks up
//!    (`LD_LIBRARY_PATH`, `ld.so.cache`, `/usr/lib`).
//!
//! So the binaries run with nothing exported in the calling shell, from the checkout or
//! installed, and `doctor` prints which one was taken and why.
//!
//! ONNX Runtime allows one environment per process: [`environment`] creates it once, in a
//! `OnceLock`, and every [`Session`] uses it.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use ort::{
    environment::Environment,
    session::Session as OrtSession,
    value::{DynValue, Tensor, TensorElementType, ValueType},
};

/// Errors of the ONNX Runtime runner. Each names what failed (library path, model, input) and
/// carries ONNX Runtime's own message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrtError {
    /// The runtime library could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {path}: {message}; run scripts/setup, or set ORT_DYLIB_PATH \
         to the wheel's libonnxruntime.so.1.31.1"
    )]
    Load {
        /// The library path that was tried.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The process-wide environment could not be created.
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
    /// The execution provider asked for is not in this ONNX Runtime build.
    #[error(
        "ONNX Runtime at {library} has no {provider} (its providers: {available}); install the \
         onnxruntime-gpu wheel and run on a machine with an NVIDIA GPU, or use the CPU provider"
    )]
    Provider {
        /// The provider asked for (`CUDAExecutionProvider`).
        provider: &'static str,
        /// The providers this build has.
        available: String,
        /// The runtime library in use.
        library: String,
    },
    /// A session could not be created from a model.
    #[error("ONNX Runtime cannot load the model {origin}: {message}")]
    Session {
        /// The model's file path, or `<memory>` for bytes.
        origin: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The runtime has no kernel for a node of the model on the provider (ONNX Runtime's
    /// `NOT_IMPLEMENTED`: bfloat16 `Mul` on the CPU provider); the model itself may be valid.
    #[error(
        "ONNX Runtime cannot load the model {origin}: {message}; the provider has no kernel for \
         this node's types: use another element type or a provider that has it (--device cuda)"
    )]
    NoKernel {
        /// The model's file path, or `<memory>` for bytes.
        origin: String,
        /// ONNX Runtime's message (it names the op, its version and the node).
        message: String,
    },
    /// A feed does not match what the model expects, or ONNX Runtime failed while running.
    #[error("ONNX Runtime failed running the model {origin}: {message}")]
    Run {
        /// The model's file path, or `<memory>` for bytes.
        origin: String,
        /// What went wrong.
        message: String,
    },
}

/// Where the ONNX Runtime library was found (the steps of the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryOrigin {
    /// The `ORT_DYLIB_PATH` variable at run time.
    Environment,
    /// Next to the running executable (its directory or `../lib`).
    NextToBinary,
    /// The project's virtualenv, the path given at build time.
    ProjectVenv,
    /// The dynamic loader's own search (`LD_LIBRARY_PATH`, system directories).
    System,
}

impl fmt::Display for LibraryOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Environment => "from ORT_DYLIB_PATH",
            Self::NextToBinary => "next to the binary",
            Self::ProjectVenv => "the project's .venv, as built",
            Self::System => "the system's library search",
        })
    }
}

/// The ONNX Runtime library this process loads, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLibrary {
    /// The path handed to the loader (a bare file name for [`LibraryOrigin::System`]).
    pub path: PathBuf,
    /// Which step of the search order found it.
    pub origin: LibraryOrigin,
}

/// The file name of the runtime library on this platform (`libonnxruntime.so` on Linux).
pub fn library_file_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Finds the ONNX Runtime library by the search order of the module doc.
///
/// # Errors
/// [`OrtError::Load`] when `ORT_DYLIB_PATH` is set to a path that does not exist.
pub fn runtime_library() -> Result<RuntimeLibrary, OrtError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    search_library(
        std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        exe_dir.as_deref(),
        option_env!("ORT_DYLIB_PATH").map(PathBuf::from),
    )
}

/// [`runtime_library`] on explicit inputs: the variable's value, the executable's directory and
/// the build-time path.
fn search_library(
    variable: Option<PathBuf>,
    exe_dir: Option<&Path>,
    built: Option<PathBuf>,
) -> Result<RuntimeLibrary, OrtError> {
    if let Some(path) = variable.filter(|p| !p.as_os_str().is_empty()) {
        if !path.exists() {
            return Err(OrtError::Load {
                message: "ORT_DYLIB_PATH names a file that does not exist (unset it to search \
                          next to the binary, the project's .venv and the system)"
                    .to_owned(),
                path,
            });
        }
        return Ok(RuntimeLibrary {
            path,
            origin: LibraryOrigin::Environment,
        });
    }
    let name = library_file_name();
    if let Some(dir) = exe_dir {
        for candidate in [dir.join(&name), dir.join("..").join("lib").join(&name)] {
            if candidate.is_file() {
                return Ok(RuntimeLibrary {
                    path: candidate,
                    origin: LibraryOrigin::NextToBinary,
                });
            }
        }
    }
    if let Some(path) = built.filter(|p| p.is_file()) {
        return Ok(RuntimeLibrary {
            path,
            origin: LibraryOrigin::ProjectVenv,
        });
    }
    Ok(RuntimeLibrary {
        path: PathBuf::from(name),
        origin: LibraryOrigin::System,
    })
}

/// The path of the ONNX Runtime library this process loads (see [`runtime_library`]); `None`
/// when `ORT_DYLIB_PATH` names a missing file.
pub fn runtime_library_path() -> Option<PathBuf> {
    runtime_library().ok().map(|l| l.path)
}

/// The process-wide ONNX Runtime environment, created on first use.
///
/// # Errors
/// [`OrtError::Load`] when the library cannot be loaded, [`OrtError::Environment`] when ONNX
/// Runtime refuses to create the environment. The error is remembered: later calls return it.
pub fn environment() -> Result<&'static Environment, OrtError> {
    static ENV: OnceLock<Result<Environment, OrtError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let library = runtime_library()?;
        let builder = ort::init_from(&library.path).map_err(|e| OrtError::Load {
            message: format!("{e} (searched: {})", library.origin),
            path: library.path.clone(),
        })?;
        builder
            .with_name("onnx-diagnostic")
            .build()
            .map_err(|e| OrtError::Environment(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Where a model comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// Element data of a [`HostTensor`]: the element types the runner feeds and fetches.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `tensor(float)`
    F32(Vec<f32>),
    /// `tensor(double)`
    F64(Vec<f64>),
    /// `tensor(int64)`
    I64(Vec<i64>),
    /// `tensor(int32)`
    I32(Vec<i32>),
    /// `tensor(bool)`
    Bool(Vec<bool>),
    /// `tensor(float16)`
    F16(Vec<half::f16>),
    /// `tensor(bfloat16)`
    BF16(Vec<half::bf16>),
    /// `tensor(int8)`
    I8(Vec<i8>),
    /// `tensor(uint8)`
    U8(Vec<u8>),
}

/// A tensor in host memory: a shape and its elements in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Elements, row-major.
    pub data: TensorData,
}

/// A model loaded into ONNX Runtime (CPU provider).
pub struct Session {
    inner: OrtSession,
    origin: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Where a session runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Provider {
    /// The CPU provider (every build has it).
    #[default]
    Cpu,
    /// The CUDA provider, when the runtime is the onnxruntime-gpu build and a GPU is present;
    /// a session that cannot use it is an error, never a silent fall-back to the CPU.
    Cuda,
}

/// The execution providers of the loaded runtime build (`CPUExecutionProvider`, ...).
///
/// # Errors
/// [`OrtError::Load`] / [`OrtError::Environment`] when the runtime cannot be loaded.
pub fn available_providers() -> Result<Vec<&'static str>, OrtError> {
    use ort::ep::ExecutionProvider;
    environment()?;
    let mut out = Vec::new();
    if ort::ep::CPU::is_available().unwrap_or(true) {
        out.push(ort::ep::CPU::NAME);
    }
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        out.push(ort::ep::CUDA::NAME);
    }
    Ok(out)
}

impl Session {
    /// Loads a model file (CPU provider).
    ///
    /// # Errors
    /// [`OrtError::Session`] with ONNX Runtime's message and the path.
    pub fn from_file(path: &Path) -> Result<Self, OrtError> {
        Self::load(Source::File(path), Provider::Cpu)
    }

    /// Loads a model file on `provider`.
    ///
    /// # Errors
    /// [`OrtError::Provider`] when the runtime lacks the provider; [`OrtError::Session`] with
    /// ONNX Runtime's message and the path.
    pub fn from_file_on(path: &Path, provider: Provider) -> Result<Self, OrtError> {
        Self::load(Source::File(path), provider)
    }

    /// Loads a serialized model (`ModelProto` bytes), CPU provider.
    ///
    /// # Errors
    /// [`OrtError::Session`] with ONNX Runtime's message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OrtError> {
        Self::load(Source::Bytes(bytes), Provider::Cpu)
    }

    /// Loads a serialized model on `provider`.
    ///
    /// # Errors
    /// As [`Session::from_file_on`].
    pub fn from_bytes_on(bytes: &[u8], provider: Provider) -> Result<Self, OrtError> {
        Self::load(Source::Bytes(bytes), provider)
    }

    /// Loads a model file on `provider` with ONNX Runtime's graph optimizations off: the graph
    /// runs as written (for a checking copy whose every node matters, such as the
    /// float32-emulating copy of a bfloat16 model, whose weights constant folding would
    /// otherwise turn into float32 copies at session creation).
    ///
    /// # Errors
    /// As [`Session::from_file_on`].
    pub fn from_file_unoptimized_on(path: &Path, provider: Provider) -> Result<Self, OrtError> {
        Self::load_with(Source::File(path), provider, false)
    }

    fn load(source: Source<'_>, provider: Provider) -> Result<Self, OrtError> {
        Self::load_with(source, provider, true)
    }

    fn load_with(source: Source<'_>, provider: Provider, optimize: bool) -> Result<Self, OrtError> {
        let origin = match source {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => "<memory>".to_owned(),
        };
        let session_error = |e: ort::Error| {
            let (origin, message) = (origin.clone(), e.to_string());
            if e.code() == ort::ErrorCode::NotImplemented {
                OrtError::NoKernel { origin, message }
            } else {
                OrtError::Session { origin, message }
            }
        };
        let mut builder = OrtSession::builder(environment()?).map_err(session_error)?;
        if !optimize {
            builder = builder
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
                .map_err(|e| session_error(e.into()))?;
        }
        if provider == Provider::Cuda {
            let available = available_providers()?;
            if !available.contains(&"CUDAExecutionProvider") {
                return Err(OrtError::Provider {
                    provider: "CUDAExecutionProvider",
                    available: available.join(", "),
                    library: runtime_library_path()
                        .map_or_else(|| "?".to_owned(), |p| p.display().to_string()),
                });
            }
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| session_error(e.into()))?;
        }
        let inner = match source {
            Source::File(p) => builder.commit_from_file(p),
            Source::Bytes(b) => builder.commit_from_memory(b),
        }
        .map_err(session_error)?;
        Ok(Self { inner, origin })
    }

    /// The model's input names, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.inner
            .inputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect()
    }

    /// The model's output names, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.inner
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect()
    }

    /// Runs the model on named feeds and returns every output, in the model's order.
    ///
    /// # Errors
    /// [`OrtError::Run`] naming the model when a feed cannot be converted, a feed is missing or
    /// ONNX Runtime fails.
    pub fn run(
        &mut self,
        feeds: &[(&str, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, OrtError> {
        let origin = self.origin.clone();
        let run_error = |message: String| OrtError::Run {
            origin: origin.clone(),
            message,
        };
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(feeds.len());
        for (name, tensor) in feeds {
            let value = to_ort(tensor).map_err(|e| run_error(format!("input {name:?}: {e}")))?;
            inputs.push(((*name).to_owned(), value));
        }
        let names = self.output_names();
        let outputs = self
            .inner
            .run(inputs)
            .map_err(|e| run_error(e.to_string()))?;
        let mut result = Vec::with_capacity(names.len());
        for name in names {
            let value = &outputs[name.as_str()];
            let tensor = from_ort(value).map_err(|e| run_error(format!("output {name:?}: {e}")))?;
            result.push((name, tensor));
        }
        Ok(result)
    }
}

fn to_ort(tensor: &HostTensor) -> ort::Result<DynValue> {
    let shape = tensor.shape.clone();
    Ok(match &tensor.data {
        TensorData::F32(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::F64(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::I64(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::I32(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::Bool(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::F16(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::BF16(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::I8(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::U8(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
    })
}

fn from_ort(value: &DynValue) -> Result<HostTensor, String> {
    let element = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("is a {other}, only tensors are supported")),
    };
    fn take<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> Result<(Vec<i64>, Vec<T>), String> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        Ok((shape.to_vec(), data.to_vec()))
    }
    let (shape, data) = match element {
        TensorElementType::Float32 => take::<f32>(value).map(|(s, d)| (s, TensorData::F32(d)))?,
        TensorElementType::Float64 => take::<f64>(value).map(|(s, d)| (s, TensorData::F64(d)))?,
        TensorElementType::Int64 => take::<i64>(value).map(|(s, d)| (s, TensorData::I64(d)))?,
        TensorElementType::Int32 => take::<i32>(value).map(|(s, d)| (s, TensorData::I32(d)))?,
        TensorElementType::Bool => take::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d)))?,
        TensorElementType::Float16 => {
            take::<half::f16>(value).map(|(s, d)| (s, TensorData::F16(d)))?
        }
        TensorElementType::Bfloat16 => {
            take::<half::bf16>(value).map(|(s, d)| (s, TensorData::BF16(d)))?
        }
        TensorElementType::Int8 => take::<i8>(value).map(|(s, d)| (s, TensorData::I8(d)))?,
        TensorElementType::Uint8 => take::<u8>(value).map(|(s, d)| (s, TensorData::U8(d)))?,
        other => {
            return Err(format!(
                "has element type {other}, which the runner does not fetch yet"
            ));
        }
    };
    Ok(HostTensor { shape, data })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A directory tree `bin/`, `lib/`, `venv/` with the library file where `with` says.
    fn layout(tag: &str, with: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "onnx-diagnostic-search-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["bin", "lib", "venv"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for dir in with {
            std::fs::write(root.join(dir).join(library_file_name()), b"").unwrap();
        }
        root
    }

    #[test]
    fn the_search_takes_the_first_step_that_applies() {
        let root = layout("order", &["bin", "lib", "venv"]);
        let bin = root.join("bin");
        let built = root.join("venv").join(library_file_name());
        let found = |variable: Option<PathBuf>, built: Option<PathBuf>| {
            search_library(variable, Some(&bin), built).unwrap()
        };
        let from_variable = found(Some(built.clone()), None);
        assert_eq!(from_variable.origin, LibraryOrigin::Environment);
        assert_eq!(from_variable.path, built);
        let beside = found(None, Some(built.clone()));
        assert_eq!(beside.origin, LibraryOrigin::NextToBinary);
        assert_eq!(beside.path, bin.join(library_file_name()));
        std::fs::remove_file(bin.join(library_file_name())).unwrap();
        let installed = found(None, Some(built.clone()));
        assert_eq!(installed.origin, LibraryOrigin::NextToBinary);
        assert_eq!(
            installed.path,
            bin.join("..").join("lib").join(library_file_name())
        );
        std::fs::remove_file(root.join("lib").join(library_file_name())).unwrap();
        let venv = found(None, Some(built.clone()));
        assert_eq!(
            (venv.origin, venv.path),
            (LibraryOrigin::ProjectVenv, built)
        );
        std::fs::remove_dir_all(root.join("venv")).unwrap();
        let system = found(Some(PathBuf::new()), Some(root.join("venv").join("x.so")));
        assert_eq!(system.origin, LibraryOrigin::System);
        assert_eq!(system.path, PathBuf::from(library_file_name()));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_variable_naming_a_missing_file_is_an_error_not_a_fall_through() {
        let root = layout("missing", &["bin"]);
        let missing = root.join("nowhere").join("libonnxruntime.so");
        let err = search_library(Some(missing.clone()), Some(&root.join("bin")), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("does not exist"),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
