//! [`Tensor`]: a libtorch tensor that, during an export, also knows its value in the graph.
//!
//! Model code is written against this type. Every op goes through [`call`]: the op's eager
//! kernel runs on libtorch; when an export records on this thread, the call is also appended to
//! the graph with the symbolic shapes of its outputs and the caller's source location
//! (`#[track_caller]` on every method). Outside an export that check is one thread-local read.
//!
//! Ops return `Result`: libtorch errors become [`Error::Torch`] naming the op and the caller.

use tch::{Device, Kind};

use crate::{
    context,
    error::{Error, Loc, Result},
    graph::{Attr, ValueId},
    ops::{self, OpDef, Rel},
    sym::SymInt,
};

/// Where a traced tensor lives: the recording (by id) and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Traced {
    pub(crate) graph: u64,
    pub(crate) id: ValueId,
}

/// A tensor of the engine (see the module doc). Cloning is shallow: the clone shares storage,
/// as a Python reference does.
#[derive(Debug)]
pub struct Tensor {
    pub(crate) t: tch::Tensor,
    pub(crate) traced: Option<Traced>,
}

impl Clone for Tensor {
    fn clone(&self) -> Self {
        Self {
            t: self.t.shallow_clone(),
            traced: self.traced,
        }
    }
}

impl From<tch::Tensor> for Tensor {
    fn from(t: tch::Tensor) -> Self {
        Self { t, traced: None }
    }
}

/// A scalar operand: an integer (possibly a symbolic size) or a float.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// An integer, kept symbolic during an export.
    Int(SymInt),
    /// A float.
    Float(f64),
}

impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Scalar::Float(v)
    }
}
impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Scalar::Int(SymInt::new(v))
    }
}
impl From<SymInt> for Scalar {
    fn from(v: SymInt) -> Self {
        Scalar::Int(v)
    }
}
impl From<&SymInt> for Scalar {
    fn from(v: &SymInt) -> Self {
        Scalar::Int(v.clone())
    }
}

impl From<Scalar> for Attr {
    fn from(s: Scalar) -> Self {
        match s {
            Scalar::Int(v) => Attr::Int(v),
            Scalar::Float(v) => Attr::Float(v),
        }
    }
}

/// Anything usable as a list of sizes: `[2, -1]`, `&[i64]`, `Vec<SymInt>`, `&[SymInt]`.
pub trait IntoSizes {
    /// The sizes.
    fn into_sizes(self) -> Vec<SymInt>;
}
impl IntoSizes for &[i64] {
    fn into_sizes(self) -> Vec<SymInt> {
        self.iter().map(|v| SymInt::new(*v)).collect()
    }
}
impl<const N: usize> IntoSizes for [i64; N] {
    fn into_sizes(self) -> Vec<SymInt> {
        self.iter().map(|v| SymInt::new(*v)).collect()
    }
}
impl IntoSizes for Vec<i64> {
    fn into_sizes(self) -> Vec<SymInt> {
        self.as_slice().into_sizes()
    }
}
impl IntoSizes for Vec<SymInt> {
    fn into_sizes(self) -> Vec<SymInt> {
        self
    }
}
impl IntoSizes for &[SymInt] {
    fn into_sizes(self) -> Vec<SymInt> {
        self.to_vec()
    }
}
impl<const N: usize> IntoSizes for [SymInt; N] {
    fn into_sizes(self) -> Vec<SymInt> {
        self.to_vec()
    }
}

/// Runs the eager kernel of `op`. The libtorch handles are passed from a stack buffer (no
/// allocation for the usual one to eight inputs): outside an export this and one thread-local
/// read are all the cost `Tensor` adds to libtorch (see `benches/`).
fn run_kernel(
    op: &'static OpDef,
    inputs: &[Option<&Tensor>],
    attrs: &[Attr],
    location: Loc,
) -> Result<Vec<tch::Tensor>> {
    const STACK: usize = 8;
    let mut buf: [Option<&tch::Tensor>; STACK] = [None; STACK];
    let heap: Vec<Option<&tch::Tensor>>;
    let raw: &[Option<&tch::Tensor>] = if inputs.len() <= STACK {
        for (slot, input) in buf.iter_mut().zip(inputs) {
            *slot = input.map(|t| &t.t);
        }
        &buf[..inputs.len()]
    } else {
        heap = inputs.iter().map(|t| t.map(|t| &t.t)).collect();
        &heap
    };
    (op.kernel)(raw, attrs).map_err(|message| Error::Torch {
        op: op.name,
        location,
        message,
    })
}

/// Calls an op: eager kernel, then recording when an export is active.
#[track_caller]
pub(crate) fn call(
    op: &'static OpDef,
    inputs: &[Option<&Tensor>],
    attrs: Vec<Attr>,
) -> Result<Vec<Tensor>> {
    let location = Loc::caller();
    let outputs = run_kernel(op, inputs, &attrs, location)?;
    if !context::recording() {
        return Ok(outputs.into_iter().map(Tensor::from).collect());
    }
    context::record(op, inputs, attrs, outputs, location)
}

/// [`call`] for an op with one output.
#[track_caller]
pub(crate) fn call1(
    op: &'static OpDef,
    inputs: &[Option<&Tensor>],
    attrs: Vec<Attr>,
) -> Result<Tensor> {
    let location = Loc::caller();
    let missing = || Error::Torch {
        op: op.name,
        location,
        message: "the kernel returned no output".to_owned(),
    };
    if !context::recording() {
        let mut outputs = run_kernel(op, inputs, &attrs, location)?;
        return outputs.pop().map(Tensor::from).ok_or_else(missing);
    }
    call(op, inputs, attrs)?.pop().ok_or_else(missing)
}

fn device_attr(device: Device) -> Attr {
    Attr::Str(if device.is_cuda() { "cuda" } else { "cpu" })
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name(&self, other: &Tensor) -> Result<Tensor> {
            call1(&ops::$op, &[Some(self), Some(other)], Vec::new())
        }
    )*};
}

macro_rules! scalar_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name(&self, other: impl Into<Scalar>) -> Result<Tensor> {
            call1(&ops::$op, &[Some(self)], vec![other.into().into()])
        }
    )*};
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $name(&self) -> Result<Tensor> {
            call1(&ops::$op, &[Some(self)], Vec::new())
        }
    )*};
}

impl Tensor {
    /// Wraps a libtorch tensor (a constant for the graph if used during an export).
    pub fn new(t: tch::Tensor) -> Self {
        Self::from(t)
    }

    /// Calls an op of the table by its torch name (`aten.add.Tensor`) with tensor inputs
    /// (`None` for an absent optional one) and attributes in the op's order: the escape hatch
    /// for code that picks ops at run time (plugins, loaders). Model code uses the methods.
    ///
    /// # Errors
    /// [`Error::UnsupportedOp`] naming the op and the caller when the table has no such op;
    /// any error of the op otherwise.
    #[track_caller]
    pub fn apply(name: &str, inputs: &[Option<&Tensor>], attrs: Vec<Attr>) -> Result<Vec<Tensor>> {
        let location = Loc::caller();
        let op = ops::op_by_name(name).ok_or_else(|| Error::UnsupportedOp {
            op: name.to_owned(),
            location,
        })?;
        call(op, inputs, attrs)
    }

    /// The libtorch tensor.
    pub fn as_tch(&self) -> &tch::Tensor {
        &self.t
    }

    /// The libtorch tensor, by value.
    pub fn into_tch(self) -> tch::Tensor {
        self.t
    }

    /// Element type.
    pub fn kind(&self) -> Kind {
        self.t.kind()
    }

    /// Device.
    pub fn device(&self) -> Device {
        self.t.device()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.t.dim()
    }

    /// The shape, symbolic during an export.
    pub fn shape(&self) -> Vec<SymInt> {
        context::shape_of(self)
    }

    /// One size (negative `d` counts from the end), symbolic during an export.
    ///
    /// # Errors
    /// [`Error::Torch`] when `d` is out of range.
    #[track_caller]
    pub fn size(&self, d: i64) -> Result<SymInt> {
        let shape = self.shape();
        let i = ops::norm_dim(d, shape.len()).map_err(|message| Error::Torch {
            op: "aten.sym_size.int",
            location: Loc::caller(),
            message,
        })?;
        Ok(shape[i].clone())
    }

    /// The concrete sizes of the underlying libtorch tensor (the example values during an
    /// export, recorded nowhere: use [`Tensor::shape`] in model code).
    pub fn concrete_shape(&self) -> Vec<i64> {
        self.t.size()
    }

    binary_methods! {
        /// `self + other` (broadcasting).
        add => ADD;
        /// `self - other`.
        sub => SUB;
        /// `torch.floor_divide(self, other)`: the quotient rounded down.
        floor_divide => FLOOR_DIVIDE;
        /// `torch.remainder(self, other)`: Python's `%`, of the sign of `other`.
        remainder => REMAINDER;
        /// `self * other`.
        mul => MUL;
        /// `self / other`.
        div => DIV;
        /// `self ** other`.
        pow => POW;
        /// Elementwise maximum.
        maximum => MAXIMUM;
        /// Elementwise minimum.
        minimum => MINIMUM;
        /// `self == other`.
        eq => EQ;
        /// `self != other`.
        ne => NE;
        /// `self < other`.
        lt => LT;
        /// `self <= other`.
        le => LE;
        /// `self > other`.
        gt => GT;
        /// `self >= other`.
        ge => GE;
        /// Logical and.
        logical_and => LOGICAL_AND;
        /// Logical or.
        logical_or => LOGICAL_OR;
        /// `self & other`.
        bitwise_and => BITWISE_AND;
        /// `self | other`.
        bitwise_or => BITWISE_OR;
        /// Matrix product with broadcasting (`torch.matmul`).
        matmul => MATMUL;
        /// Batched matrix product.
        bmm => BMM;
    }

    scalar_methods! {
        /// `self + scalar`.
        add_scalar => ADD_SCALAR;
        /// `self - scalar`.
        sub_scalar => SUB_SCALAR;
        /// `self * scalar`.
        mul_scalar => MUL_SCALAR;
        /// `self / scalar`.
        div_scalar => DIV_SCALAR;
        /// `scalar - self`.
        rsub_scalar => RSUB_SCALAR;
        /// `self ** scalar`.
        pow_scalar => POW_SCALAR;
        /// `self == scalar`.
        eq_scalar => EQ_SCALAR;
        /// `self != scalar`.
        ne_scalar => NE_SCALAR;
        /// `self < scalar`.
        lt_scalar => LT_SCALAR;
        /// `self <= scalar`.
        le_scalar => LE_SCALAR;
        /// `self > scalar`.
        gt_scalar => GT_SCALAR;
        /// `self >= scalar`.
        ge_scalar => GE_SCALAR;
    }

    unary_methods! {
        /// `-self`.
        neg => NEG;
        /// Exponential.
        exp => EXP;
        /// Natural logarithm.
        log => LOG;
        /// Square root.
        sqrt => SQRT;
        /// `1 / sqrt(self)`.
        rsqrt => RSQRT;
        /// Sine.
        sin => SIN;
        /// Cosine.
        cos => COS;
        /// Absolute value.
        abs => ABS;
        /// Hyperbolic tangent.
        tanh => TANH;
        /// Logistic sigmoid.
        sigmoid => SIGMOID;
        /// `max(self, 0)`.
        relu => RELU;
        /// `self * sigmoid(self)`.
        silu => SILU;
        /// Logical not.
        logical_not => LOGICAL_NOT;
        /// Bitwise not (`~`).
        bitwise_not => BITWISE_NOT;
        /// A copy with its own storage.
        copy => CLONE;
        /// A contiguous tensor with the same values.
        contiguous => CONTIGUOUS;
        /// Whether each element is infinite.
        isinf => ISINF;
        /// Whether each element is NaN.
        isnan => ISNAN;
    }

    /// GELU: `approximate` is `"none"` (erf form) or `"tanh"`.
    #[track_caller]
    pub fn gelu(&self, approximate: &'static str) -> Result<Tensor> {
        call1(&ops::GELU, &[Some(self)], vec![Attr::Str(approximate)])
    }

    /// Clamps into `[min, max]`; either bound may be absent.
    #[track_caller]
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Result<Tensor> {
        let bound = |b: Option<f64>| b.map_or(Attr::None, Attr::Float);
        call1(&ops::CLAMP, &[Some(self)], vec![bound(min), bound(max)])
    }

    /// Converts the element type, as `x.to(dtype)`: a tensor that already has this type is
    /// returned as it is and nothing is recorded (torch returns `self` too, so an exported
    /// graph of a float32 model has no cast where a float16 one would have one).
    #[track_caller]
    pub fn to_kind(&self, kind: Kind) -> Result<Tensor> {
        if self.kind() == kind {
            return Ok(self.clone());
        }
        call1(
            &ops::TO_COPY,
            &[Some(self)],
            vec![Attr::Kind(kind), Attr::None],
        )
    }

    /// Moves to another device (`cpu`, `cuda`), as `x.to(device)`: recorded as
    /// `aten._to_copy.default(x, None, 'cuda')`, so that the exported graph moves its input
    /// where the model did.
    #[track_caller]
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        call1(
            &ops::TO_COPY,
            &[Some(self)],
            vec![Attr::None, device_attr(device)],
        )
    }

    /// `torch.where(cond, self, other)`.
    #[track_caller]
    pub fn where_cond(&self, cond: &Tensor, other: &Tensor) -> Result<Tensor> {
        call1(
            &ops::WHERE,
            &[Some(cond), Some(self), Some(other)],
            Vec::new(),
        )
    }

    /// Fills with `value` where `mask` is true.
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: impl Into<Scalar>) -> Result<Tensor> {
        call1(
            &ops::MASKED_FILL,
            &[Some(self), Some(mask)],
            vec![value.into().into()],
        )
    }

    /// Softmax along `dim`.
    #[track_caller]
    pub fn softmax(&self, dim: i64) -> Result<Tensor> {
        call1(&ops::SOFTMAX, &[Some(self)], vec![Attr::Int(dim.into())])
    }

    /// Log-softmax along `dim`.
    #[track_caller]
    pub fn log_softmax(&self, dim: i64) -> Result<Tensor> {
        call1(
            &ops::LOG_SOFTMAX,
            &[Some(self)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// Cumulative sum along `dim`.
    #[track_caller]
    pub fn cumsum(&self, dim: i64) -> Result<Tensor> {
        call1(&ops::CUMSUM, &[Some(self)], vec![Attr::Int(dim.into())])
    }

    /// Upper triangle from `diagonal`.
    #[track_caller]
    pub fn triu(&self, diagonal: i64) -> Result<Tensor> {
        call1(&ops::TRIU, &[Some(self)], vec![Attr::Int(diagonal.into())])
    }

    /// Lower triangle up to `diagonal`.
    #[track_caller]
    pub fn tril(&self, diagonal: i64) -> Result<Tensor> {
        call1(&ops::TRIL, &[Some(self)], vec![Attr::Int(diagonal.into())])
    }

    /// A view with another shape (one size may be -1).
    #[track_caller]
    pub fn view(&self, shape: impl IntoSizes) -> Result<Tensor> {
        call1(
            &ops::VIEW,
            &[Some(self)],
            vec![Attr::Ints(shape.into_sizes())],
        )
    }

    /// Another shape, copying if needed (one size may be -1).
    #[track_caller]
    pub fn reshape(&self, shape: impl IntoSizes) -> Result<Tensor> {
        call1(
            &ops::RESHAPE,
            &[Some(self)],
            vec![Attr::Ints(shape.into_sizes())],
        )
    }

    /// Flattens dims `start..=end` into one.
    #[track_caller]
    pub fn flatten(&self, start: i64, end: i64) -> Result<Tensor> {
        let shape = self.shape();
        let location = Loc::caller();
        let bad = |message| Error::Torch {
            op: "aten.flatten.using_ints",
            location,
            message,
        };
        let s = ops::norm_dim(start, shape.len()).map_err(bad)?;
        let e = ops::norm_dim(end, shape.len()).map_err(bad)?;
        let mut target: Vec<SymInt> = shape[..s].to_vec();
        target.push(ops::numel(&shape[s..=e.max(s)]));
        target.extend(shape[e.max(s) + 1..].iter().cloned());
        call1(&ops::VIEW, &[Some(self)], vec![Attr::Ints(target)])
    }

    /// Swaps two dims.
    #[track_caller]
    pub fn transpose(&self, d0: i64, d1: i64) -> Result<Tensor> {
        call1(
            &ops::TRANSPOSE,
            &[Some(self)],
            vec![Attr::Int(d0.into()), Attr::Int(d1.into())],
        )
    }

    /// Reorders dims.
    #[track_caller]
    pub fn permute(&self, dims: &[i64]) -> Result<Tensor> {
        call1(
            &ops::PERMUTE,
            &[Some(self)],
            vec![Attr::Ints(dims.into_sizes())],
        )
    }

    /// Inserts a dim of size 1.
    #[track_caller]
    pub fn unsqueeze(&self, dim: i64) -> Result<Tensor> {
        call1(&ops::UNSQUEEZE, &[Some(self)], vec![Attr::Int(dim.into())])
    }

    /// Removes `dim` if its size is 1.
    #[track_caller]
    pub fn squeeze_dim(&self, dim: i64) -> Result<Tensor> {
        call1(&ops::SQUEEZE, &[Some(self)], vec![Attr::Int(dim.into())])
    }

    /// Broadcasts to `sizes` (-1 keeps a size).
    #[track_caller]
    pub fn expand(&self, sizes: impl IntoSizes) -> Result<Tensor> {
        call1(
            &ops::EXPAND,
            &[Some(self)],
            vec![Attr::Ints(sizes.into_sizes())],
        )
    }

    /// Concatenates along `dim`.
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], dim: i64) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = tensors.iter().map(|t| Some(*t)).collect();
        call1(&ops::CAT, &inputs, vec![Attr::Int(dim.into())])
    }

    /// Stacks along a new `dim`.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], dim: i64) -> Result<Tensor> {
        let inputs: Vec<Option<&Tensor>> = tensors.iter().map(|t| Some(*t)).collect();
        call1(&ops::STACK, &inputs, vec![Attr::Int(dim.into())])
    }

    /// Splits `dim` into pieces of the given sizes.
    #[track_caller]
    pub fn split_with_sizes(&self, sizes: impl IntoSizes, dim: i64) -> Result<Vec<Tensor>> {
        call(
            &ops::SPLIT_WITH_SIZES,
            &[Some(self)],
            vec![Attr::Ints(sizes.into_sizes()), Attr::Int(dim.into())],
        )
    }

    /// Splits `dim` into `chunks` pieces of size `ceil(n / chunks)` (the last may be smaller),
    /// as `torch.chunk`. The number of pieces depends on the size: when it is symbolic, the
    /// comparisons that decided it are recorded as guards (as torch does), so that running the
    /// graph on a size giving another number of pieces is refused instead of wrong.
    #[track_caller]
    pub fn chunk(&self, chunks: i64, dim: i64) -> Result<Vec<Tensor>> {
        let n = self.size(dim)?;
        if chunks <= 0 {
            return Err(Error::Torch {
                op: "aten.chunk.default",
                location: Loc::caller(),
                message: format!("chunk expects a positive number of chunks, got {chunks}"),
            });
        }
        let piece = (&n + (chunks - 1)).floor_div(chunks);
        // The number of pieces is the smallest count whose pieces cover the size; the last
        // piece takes the rest, so that the sizes add up to `n` for every value of `n`.
        let mut count = 0_i64;
        while (&piece * count).compare(Rel::Lt, &n)? {
            count += 1;
        }
        let mut sizes = vec![piece.clone(); count.max(1) as usize - 1];
        sizes.push(if count == 0 {
            SymInt::new(0)
        } else {
            &n - &(&piece * (count - 1))
        });
        self.split_with_sizes(sizes, dim)
    }

    /// `narrow(dim, start, length)`: `length` elements from `start` (negative counts from the
    /// end).
    #[track_caller]
    pub fn narrow(
        &self,
        dim: i64,
        start: impl Into<SymInt>,
        length: impl Into<SymInt>,
    ) -> Result<Tensor> {
        call1(
            &ops::NARROW,
            &[Some(self)],
            vec![
                Attr::Int(dim.into()),
                Attr::Int(start.into()),
                Attr::Int(length.into()),
            ],
        )
    }

    /// Python's `x[..., start:end:step]` on `dim`; bounds may be negative or absent.
    #[track_caller]
    pub fn slice(
        &self,
        dim: i64,
        start: Option<SymInt>,
        end: Option<SymInt>,
        step: i64,
    ) -> Result<Tensor> {
        let start = start.unwrap_or_else(|| SymInt::new(0));
        let end = end.unwrap_or_else(|| SymInt::new(i64::MAX));
        call1(
            &ops::SLICE,
            &[Some(self)],
            vec![
                Attr::Int(dim.into()),
                Attr::Int(start),
                Attr::Int(end),
                Attr::Int(step.into()),
            ],
        )
    }

    /// Selects one index of `dim`, removing it (torch's `x.select(dim, i)`, `x[i]`).
    ///
    /// The index is a size (`i64`, [`SymInt`], negative counting from the end) or a 0-d
    /// integer tensor, as torch indexes with a 0-d tensor; the loop index of a loop rewritten
    /// into [`for_range`](crate::for_range) is such a tensor. A tensor index must be in
    /// `0..size` (it is read with `index_select`, which takes no negative index).
    #[track_caller]
    pub fn select<'i>(&self, dim: i64, index: impl Into<TensorIndex<'i>>) -> Result<Tensor> {
        match index.into() {
            TensorIndex::Size(i) => call1(
                &ops::SELECT,
                &[Some(self)],
                vec![Attr::Int(dim.into()), Attr::Int(i)],
            ),
            TensorIndex::Tensor(i) => self.index_select(dim, &i.reshape([1])?)?.squeeze_dim(dim),
        }
    }

    /// `self` with its slice `index` of `dim` replaced by `src` (torch's `select_scatter`,
    /// the out-of-place `x[i] = src`); `src` has the shape of `self.select(dim, index)`. The
    /// index is a size (negative counting from the end) or a 0-d integer tensor, as in
    /// [`Tensor::select`]. Recorded as `index_put` on the leading dimension (with transposes
    /// when `dim` is not the first), so it lowers to ONNX `ScatterND`.
    ///
    /// # Errors
    /// [`Error::Torch`] when `dim` is out of range or the shapes do not match.
    #[track_caller]
    pub fn select_scatter<'i>(
        &self,
        src: &Tensor,
        dim: i64,
        index: impl Into<TensorIndex<'i>>,
    ) -> Result<Tensor> {
        let shape = self.shape();
        let location = Loc::caller();
        let d = ops::norm_dim(dim, shape.len()).map_err(|message| Error::Torch {
            op: "aten.select_scatter.default",
            location,
            message,
        })? as i64;
        let index = match index.into() {
            TensorIndex::Size(i) => {
                let i = if i.hint() < 0 {
                    &shape[d as usize] + &i
                } else {
                    i
                };
                Tensor::arange(i.clone(), &i + 1, 1, Kind::Int64, self.device())?
            }
            TensorIndex::Tensor(i) => i.reshape([1])?,
        };
        let values = src.unsqueeze(0)?;
        if d == 0 {
            return self.index_put(&[Some(&index)], &values, false);
        }
        // `dim` moved to the front, the others in their order: a row is laid out as `src`.
        let rank = shape.len() as i64;
        let mut perm = vec![d];
        perm.extend((0..rank).filter(|&k| k != d));
        let mut back = vec![0; perm.len()];
        for (k, &p) in perm.iter().enumerate() {
            back[p as usize] = k as i64;
        }
        self.permute(&perm)?
            .index_put(&[Some(&index)], &values, false)?
            .permute(&back)
    }

    /// `self` with the slices `index` of `dim` replaced by those of `src` (torch's
    /// `index_copy`, out of place; transformers' static cache writes its new positions with
    /// it). `src` has the shape of `self` with `index.numel()` along `dim`. Recorded as
    /// `index_put` on the leading dimension with transposes around it when `dim` is not the
    /// first (`x[:, :, idx] = src` would record leading `None` indices), so it lowers to ONNX
    /// `ScatterND`.
    ///
    /// # Errors
    /// [`Error::Torch`] when `dim` is out of range or the shapes do not match.
    #[track_caller]
    pub fn index_copy(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let rank = self.rank();
        let location = Loc::caller();
        let d = ops::norm_dim(dim, rank).map_err(|message| Error::Torch {
            op: "aten.index_copy.default",
            location,
            message,
        })? as i64;
        if d == 0 {
            return self.index_put(&[Some(index)], src, false);
        }
        let mut perm = vec![d];
        perm.extend((0..rank as i64).filter(|&k| k != d));
        let mut back = vec![0; perm.len()];
        for (k, &p) in perm.iter().enumerate() {
            back[p as usize] = k as i64;
        }
        self.permute(&perm)?
            .index_put(&[Some(index)], &src.permute(&perm)?, false)?
            .permute(&back)
    }

    /// Selects indices of `dim`.
    #[track_caller]
    pub fn index_select(&self, dim: i64, index: &Tensor) -> Result<Tensor> {
        call1(
            &ops::INDEX_SELECT,
            &[Some(self), Some(index)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// Gathers values along `dim`.
    #[track_caller]
    pub fn gather(&self, dim: i64, index: &Tensor) -> Result<Tensor> {
        call1(
            &ops::GATHER,
            &[Some(self), Some(index)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// Scatters `src` along `dim` at `index`.
    #[track_caller]
    pub fn scatter(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        call1(
            &ops::SCATTER,
            &[Some(self), Some(index), Some(src)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// `self[indices] = values` (out of place); `None` stands for `:`.
    #[track_caller]
    pub fn index_put(
        &self,
        indices: &[Option<&Tensor>],
        values: &Tensor,
        accumulate: bool,
    ) -> Result<Tensor> {
        let mut inputs = vec![Some(self), Some(values)];
        inputs.extend(indices.iter().copied());
        call1(&ops::INDEX_PUT, &inputs, vec![Attr::Bool(accumulate)])
    }

    /// `self[indices]` with index tensors on the leading dims.
    #[track_caller]
    pub fn index(&self, indices: &[&Tensor]) -> Result<Tensor> {
        let mut inputs = vec![Some(self)];
        inputs.extend(indices.iter().map(|t| Some(*t)));
        call1(&ops::INDEX, &inputs, Vec::new())
    }

    /// `x @ weight.T + bias`.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        call1(&ops::LINEAR, &[Some(self), Some(weight), bias], Vec::new())
    }

    /// Rows of `weight` at `indices`.
    #[track_caller]
    pub fn embedding(weight: &Tensor, indices: &Tensor) -> Result<Tensor> {
        call1(&ops::EMBEDDING, &[Some(weight), Some(indices)], Vec::new())
    }

    /// Layer normalisation over the trailing `normalized_shape`.
    #[track_caller]
    pub fn layer_norm(
        &self,
        normalized_shape: &[i64],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        call1(
            &ops::LAYER_NORM,
            &[Some(self), weight, bias],
            vec![Attr::Ints(normalized_shape.into_sizes()), Attr::Float(eps)],
        )
    }

    /// Group normalisation.
    #[track_caller]
    pub fn group_norm(
        &self,
        num_groups: i64,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        call1(
            &ops::GROUP_NORM,
            &[Some(self), weight, bias],
            vec![Attr::Int(num_groups.into()), Attr::Float(eps)],
        )
    }

    /// 2-D convolution.
    #[track_caller]
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [i64; 2],
        padding: [i64; 2],
        dilation: [i64; 2],
        groups: i64,
    ) -> Result<Tensor> {
        self.conv(
            &ops::CONV2D,
            weight,
            bias,
            [&stride, &padding, &dilation],
            groups,
        )
    }

    /// 3-D convolution (`torch.nn.functional.conv3d`).
    #[track_caller]
    pub fn conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [i64; 3],
        padding: [i64; 3],
        dilation: [i64; 3],
        groups: i64,
    ) -> Result<Tensor> {
        self.conv(
            &ops::CONV3D,
            weight,
            bias,
            [&stride, &padding, &dilation],
            groups,
        )
    }

    #[track_caller]
    fn conv(
        &self,
        op: &'static OpDef,
        weight: &Tensor,
        bias: Option<&Tensor>,
        [stride, padding, dilation]: [&[i64]; 3],
        groups: i64,
    ) -> Result<Tensor> {
        call1(
            op,
            &[Some(self), Some(weight), bias],
            vec![
                Attr::Ints(stride.into_sizes()),
                Attr::Ints(padding.into_sizes()),
                Attr::Ints(dilation.into_sizes()),
                Attr::Int(groups.into()),
            ],
        )
    }

    /// 2-D transposed convolution (`torch.nn.functional.conv_transpose2d`; the weight is
    /// `[in, out / groups, kh, kw]`).
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [i64; 2],
        padding: [i64; 2],
        output_padding: [i64; 2],
        groups: i64,
        dilation: [i64; 2],
    ) -> Result<Tensor> {
        call1(
            &ops::CONV_TRANSPOSE2D,
            &[Some(self), Some(weight), bias],
            vec![
                Attr::Ints(stride.into_sizes()),
                Attr::Ints(padding.into_sizes()),
                Attr::Ints(output_padding.into_sizes()),
                Attr::Int(groups.into()),
                Attr::Ints(dilation.into_sizes()),
            ],
        )
    }

    /// 2-D average pooling.
    #[track_caller]
    pub fn avg_pool2d(
        &self,
        kernel: [i64; 2],
        stride: [i64; 2],
        padding: [i64; 2],
    ) -> Result<Tensor> {
        call1(
            &ops::AVG_POOL2D,
            &[Some(self)],
            vec![
                Attr::Ints(kernel.into_sizes()),
                Attr::Ints(stride.into_sizes()),
                Attr::Ints(padding.into_sizes()),
            ],
        )
    }

    /// `torch.nn.functional.scaled_dot_product_attention`.
    #[track_caller]
    pub fn scaled_dot_product_attention(
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        attn_mask: Option<&Tensor>,
        is_causal: bool,
        scale: Option<f64>,
        enable_gqa: bool,
    ) -> Result<Tensor> {
        call1(
            &ops::SDPA,
            &[Some(query), Some(key), Some(value), attn_mask],
            vec![
                Attr::Float(0.0),
                Attr::Bool(is_causal),
                scale.map_or(Attr::None, Attr::Float),
                Attr::Bool(enable_gqa),
            ],
        )
    }

    /// The `k` largest (or smallest) values along `dim` and their indices.
    #[track_caller]
    pub fn topk(
        &self,
        k: impl Into<SymInt>,
        dim: i64,
        largest: bool,
        sorted: bool,
    ) -> Result<(Tensor, Tensor)> {
        let mut out = call(
            &ops::TOPK,
            &[Some(self)],
            vec![
                Attr::Int(k.into()),
                Attr::Int(dim.into()),
                Attr::Bool(largest),
                Attr::Bool(sorted),
            ],
        )?;
        pair(&mut out, ops::TOPK.name)
    }

    #[track_caller]
    fn reduce(&self, op: &'static OpDef, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        call1(
            op,
            &[Some(self)],
            vec![Attr::Ints(dims.into_sizes()), Attr::Bool(keepdim)],
        )
    }

    /// Sum over `dims` (all when empty).
    #[track_caller]
    pub fn sum(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::SUM, dims, keepdim)
    }

    /// Mean over `dims` (all when empty).
    #[track_caller]
    pub fn mean(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::MEAN, dims, keepdim)
    }

    /// Maximum over `dims`.
    #[track_caller]
    pub fn amax(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::AMAX, dims, keepdim)
    }

    /// Minimum over `dims`.
    #[track_caller]
    pub fn amin(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::AMIN, dims, keepdim)
    }

    /// Whether any element is true over `dims` (all when empty).
    #[track_caller]
    pub fn any(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::ANY, dims, keepdim)
    }

    /// Whether every element is true over `dims` (all when empty).
    #[track_caller]
    pub fn all(&self, dims: &[i64], keepdim: bool) -> Result<Tensor> {
        self.reduce(&ops::ALL, dims, keepdim)
    }

    /// Maximum along `dim` with its indices.
    #[track_caller]
    pub fn max_dim(&self, dim: i64, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let mut out = call(
            &ops::MAX_DIM,
            &[Some(self)],
            vec![Attr::Int(dim.into()), Attr::Bool(keepdim)],
        )?;
        pair(&mut out, ops::MAX_DIM.name)
    }

    /// Minimum along `dim` with its indices.
    #[track_caller]
    pub fn min_dim(&self, dim: i64, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let mut out = call(
            &ops::MIN_DIM,
            &[Some(self)],
            vec![Attr::Int(dim.into()), Attr::Bool(keepdim)],
        )?;
        pair(&mut out, ops::MIN_DIM.name)
    }

    /// Index of the maximum along `dim`.
    #[track_caller]
    pub fn argmax(&self, dim: i64, keepdim: bool) -> Result<Tensor> {
        call1(
            &ops::ARGMAX,
            &[Some(self)],
            vec![Attr::Int(dim.into()), Attr::Bool(keepdim)],
        )
    }

    /// `[start, start + step, ...)` up to `end`; bounds may be symbolic.
    #[track_caller]
    pub fn arange(
        start: impl Into<SymInt>,
        end: impl Into<SymInt>,
        step: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        call1(
            &ops::ARANGE,
            &[],
            vec![
                Attr::Int(start.into()),
                Attr::Int(end.into()),
                Attr::Int(step.into()),
                Attr::Kind(kind),
                device_attr(device),
            ],
        )
    }

    /// Zeros of a (possibly symbolic) shape.
    #[track_caller]
    pub fn zeros(shape: impl IntoSizes, kind: Kind, device: Device) -> Result<Tensor> {
        call1(
            &ops::ZEROS,
            &[],
            vec![
                Attr::Ints(shape.into_sizes()),
                Attr::Kind(kind),
                device_attr(device),
            ],
        )
    }

    /// Ones of a (possibly symbolic) shape.
    #[track_caller]
    pub fn ones(shape: impl IntoSizes, kind: Kind, device: Device) -> Result<Tensor> {
        call1(
            &ops::ONES,
            &[],
            vec![
                Attr::Ints(shape.into_sizes()),
                Attr::Kind(kind),
                device_attr(device),
            ],
        )
    }

    /// A tensor filled with `value`.
    #[track_caller]
    pub fn full(
        shape: impl IntoSizes,
        value: impl Into<Scalar>,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        call1(
            &ops::FULL,
            &[],
            vec![
                Attr::Ints(shape.into_sizes()),
                value.into().into(),
                Attr::Kind(kind),
                device_attr(device),
            ],
        )
    }

    #[track_caller]
    fn forbid_data_read(&self, what: &str) -> Result<()> {
        if context::recording() {
            return Err(Error::DataDependent {
                what: what.to_owned(),
                location: Loc::caller(),
            });
        }
        Ok(())
    }

    /// The value of a one-element tensor. During an export this is a data-dependent error.
    ///
    /// # Errors
    /// [`Error::DataDependent`] during an export; [`Error::Torch`] if not one element.
    #[track_caller]
    pub fn item_f64(&self) -> Result<f64> {
        self.forbid_data_read("item() on a tensor")?;
        let location = Loc::caller();
        self.t.f_double_value(&[]).map_err(|e| Error::Torch {
            op: "aten.item.default",
            location,
            message: e.to_string(),
        })
    }

    /// The truth value of a one-element tensor (Python's `if tensor:`). During an export this
    /// is a data-dependent error: use `cond`.
    ///
    /// # Errors
    /// [`Error::DataDependent`] during an export; [`Error::Torch`] if not one element.
    #[track_caller]
    pub fn to_bool(&self) -> Result<bool> {
        self.forbid_data_read("use of a tensor as a bool")?;
        Ok(self.item_f64()? != 0.0)
    }

    /// The elements as `i64`, row-major: `tensor.tolist()` of an integer tensor (eager use
    /// only).
    ///
    /// # Errors
    /// [`Error::DataDependent`] during an export: the values are not known when the graph is
    /// recorded.
    #[track_caller]
    pub fn to_vec_i64(&self) -> Result<Vec<i64>> {
        self.forbid_data_read("tolist() on a tensor")?;
        let location = Loc::caller();
        let flat = self
            .t
            .f_to_kind(Kind::Int64)
            .and_then(|t| t.f_reshape([-1]));
        flat.and_then(|t| Vec::<i64>::try_from(&t))
            .map_err(|e| Error::Torch {
                op: "aten._to_copy.default",
                location,
                message: e.to_string(),
            })
    }

    /// The elements as `f32`, row-major (eager use only).
    ///
    /// # Errors
    /// [`Error::DataDependent`] during an export.
    #[track_caller]
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.forbid_data_read("reading tensor values")?;
        let location = Loc::caller();
        let flat = self
            .t
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_reshape([-1]));
        flat.and_then(|t| Vec::<f32>::try_from(&t))
            .map_err(|e| Error::Torch {
                op: "aten._to_copy.default",
                location,
                message: e.to_string(),
            })
    }
}

#[track_caller]
pub(crate) fn pair(out: &mut Vec<Tensor>, op: &'static str) -> Result<(Tensor, Tensor)> {
    let location = Loc::caller();
    let missing = || Error::Torch {
        op,
        location,
        message: "the kernel returned fewer than two outputs".to_owned(),
    };
    let b = out.pop().ok_or_else(missing)?;
    let a = out.pop().ok_or_else(missing)?;
    Ok((a, b))
}

/// The index of [`Tensor::select`] and [`Tensor::select_scatter`]: a size, or a 0-d integer
/// tensor (what a loop rewritten into [`for_range`](crate::for_range) hands its body).
#[derive(Clone, Debug)]
pub enum TensorIndex<'a> {
    /// A plain or symbolic size; negative counts from the end.
    Size(SymInt),
    /// A 0-d (or one-element) integer tensor.
    Tensor(&'a Tensor),
}

impl From<i64> for TensorIndex<'_> {
    fn from(i: i64) -> Self {
        TensorIndex::Size(SymInt::new(i))
    }
}

impl From<SymInt> for TensorIndex<'_> {
    fn from(i: SymInt) -> Self {
        TensorIndex::Size(i)
    }
}

impl From<&SymInt> for TensorIndex<'_> {
    fn from(i: &SymInt) -> Self {
        TensorIndex::Size(i.clone())
    }
}

impl<'a> From<&'a Tensor> for TensorIndex<'a> {
    fn from(t: &'a Tensor) -> Self {
        TensorIndex::Tensor(t)
    }
}
