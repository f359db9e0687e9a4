//! The [`Tensor`] methods of data-dependent ops (`nonzero`, `masked_select`, `bincount`) and
//! of mixture-of-experts routing (`one_hot`, `index_add`, `scatter_add`, `sort`,
//! `repeat_interleave`). During an export a data-dependent size is a fresh unbacked symbol
//! (`u0`, ...) with range `[0, number of elements]`: shapes carry it, `ExportedProgram::run`
//! binds it from each run's actual output, and a decision on its value that its range does not
//! settle is [`Error::DataDependent`](crate::Error::DataDependent) naming the symbol and the
//! line (bound it with [`check_size`](crate::control_flow::check_size) first).

use crate::{
    error::Result,
    graph::Attr,
    ops,
    tensor::{Tensor, call, call1, pair},
};

impl Tensor {
    /// Indices of the non-zero elements, `[u, rank]` int64 (`torch.nonzero`). Its first size
    /// depends on the data: during an export it is a fresh unbacked symbol.
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn nonzero(&self) -> Result<Tensor> {
        call1(&ops::NONZERO, &[Some(self)], Vec::new())
    }

    /// `torch.nonzero(x, as_tuple=True)` (and `torch.where(x)` with one argument): one 1-D
    /// index tensor per dimension, all of the data-dependent length of [`Tensor::nonzero`].
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn nonzero_tuple(&self) -> Result<Vec<Tensor>> {
        let nz = self.nonzero()?;
        let mut out = Vec::with_capacity(self.rank());
        for k in 0..self.rank() as i64 {
            out.push(nz.select(1, k)?);
        }
        Ok(out)
    }

    /// The elements of `self` (broadcast with `mask`) where `mask` is true, as a 1-D tensor of
    /// data-dependent length (`torch.masked_select`, `x[mask]`).
    ///
    /// # Errors
    /// Any error of libtorch (shapes that do not broadcast, a mask that is not boolean).
    #[track_caller]
    pub fn masked_select(&self, mask: &Tensor) -> Result<Tensor> {
        call1(&ops::MASKED_SELECT, &[Some(self), Some(mask)], Vec::new())
    }

    /// `torch.bincount(x, minlength=minlength)` of a 1-D non-negative integer tensor: the
    /// count of each value, of the data-dependent length `max(max(x) + 1, minlength)`.
    ///
    /// # Errors
    /// Any error of libtorch (negative values, a tensor that is not 1-D).
    #[track_caller]
    pub fn bincount(&self, minlength: i64) -> Result<Tensor> {
        call1(
            &ops::BINCOUNT,
            &[Some(self)],
            vec![Attr::Int(minlength.into())],
        )
    }

    /// `torch.nn.functional.one_hot(x, num_classes)`: int64, one more dimension of
    /// `num_classes`.
    ///
    /// # Errors
    /// Any error of libtorch (a value outside `[0, num_classes)`).
    #[track_caller]
    pub fn one_hot(&self, num_classes: i64) -> Result<Tensor> {
        call1(
            &ops::ONE_HOT,
            &[Some(self)],
            vec![Attr::Int(num_classes.into())],
        )
    }

    /// `x.index_add(dim, index, source)`: a copy of `self` with the slices of `source` added
    /// at the positions `index` along `dim` (repeated indices add up).
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn index_add(&self, dim: i64, index: &Tensor, source: &Tensor) -> Result<Tensor> {
        call1(
            &ops::INDEX_ADD,
            &[Some(self), Some(index), Some(source)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// `x.scatter_add(dim, index, src)`: a copy of `self` with `src` added at `index` along
    /// `dim`.
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn scatter_add(&self, dim: i64, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        call1(
            &ops::SCATTER_ADD,
            &[Some(self), Some(index), Some(src)],
            vec![Attr::Int(dim.into())],
        )
    }

    /// `x.sort(dim, descending)`: the sorted values and their indices.
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn sort(&self, dim: i64, descending: bool) -> Result<(Tensor, Tensor)> {
        let mut out = call(
            &ops::SORT,
            &[Some(self)],
            vec![Attr::Int(dim.into()), Attr::Bool(descending)],
        )?;
        pair(&mut out, ops::SORT.name)
    }

    /// `x.argsort(dim, descending)`: the indices of [`Tensor::sort`] (torch decomposes it
    /// the same way).
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn argsort(&self, dim: i64, descending: bool) -> Result<Tensor> {
        Ok(self.sort(dim, descending)?.1)
    }

    /// `x.repeat_interleave(repeats, dim)` with an integer count: each slice along `dim`
    /// repeated `repeats` times in place.
    ///
    /// # Errors
    /// Any error of libtorch.
    #[track_caller]
    pub fn repeat_interleave(&self, repeats: i64, dim: i64) -> Result<Tensor> {
        call1(
            &ops::REPEAT_INTERLEAVE,
            &[Some(self)],
            vec![Attr::Int(repeats.into()), Attr::Int(dim.into())],
        )
    }

    /// `torch.repeat_interleave(self, repeats)` of a 1-D tensor with a 1-D tensor of counts:
    /// element `i` repeated `repeats[i]` times. The length, `sum(repeats)`, depends on the
    /// data: during an export it is a fresh unbacked symbol.
    ///
    /// # Errors
    /// Any error of libtorch (negative counts, sizes that differ).
    #[track_caller]
    pub fn repeat_interleave_tensor(&self, repeats: &Tensor) -> Result<Tensor> {
        call1(
            &ops::REPEAT_INTERLEAVE_TENSOR,
            &[Some(self), Some(repeats)],
            Vec::new(),
        )
    }

    /// `self.masked_scatter(mask, source)`: the elements of `self` where `mask` (broadcast to
    /// `self`'s shape) is true replaced, in row-major order, by the first elements of
    /// `source`. Written as torch's decomposition would run it, so that it exports with any
    /// number of true elements: the exclusive prefix count of the mask indexes the flattened
    /// source, and a `where` keeps `self` elsewhere (also with an empty source and an all-false
    /// mask: the gather reads a padding element).
    ///
    /// # Errors
    /// Any error of the ops (a mask that does not broadcast, a source too short for the mask:
    /// an index out of range).
    #[track_caller]
    pub fn masked_scatter(&self, mask: &Tensor, source: &Tensor) -> Result<Tensor> {
        let shape = self.shape();
        let mask = mask.expand(shape.clone())?;
        let flat = mask.reshape(vec![crate::SymInt::new(-1)])?;
        let counts = flat.to_kind(tch::Kind::Int64)?;
        // cumsum - mask: for a true element, the number of true elements before it (0 at the
        // false ones, which would otherwise index past the source's end).
        let zero = Tensor::zeros(Vec::<crate::SymInt>::new(), tch::Kind::Int64, self.device())?;
        let index = counts.cumsum(0)?.sub(&counts)?.where_cond(&flat, &zero)?;
        // One more element, so that an empty source (no true element) still gathers.
        let src = Tensor::cat(
            &[
                &source.reshape(vec![crate::SymInt::new(-1)])?,
                &Tensor::zeros([1], source.kind(), source.device())?,
            ],
            0,
        )?;
        let picked = src.index_select(0, &index)?.reshape(shape)?;
        picked.to_kind(self.kind())?.where_cond(&mask, self)
    }
}
