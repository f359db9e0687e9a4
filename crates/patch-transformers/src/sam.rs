//! The patch of SAM's mask decoder.

use onnx_diagnostic_core::{Rel, Result, Tensor, check_size, cond};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::models::sam::SamMaskDecoder;

/// Replaces `SamMaskDecoder.forward`, which joins the prompt tokens to the IoU and mask tokens
/// only `if sparse_prompt_embeddings.sum().item() != 0`: a Python branch on the data, which an
/// export cannot take (torch.export stops on the `.item()`). As the seeds'
/// `patched_SamMaskDecoder.forward`, the patch chooses at run time with
/// `cond(any(sparse_prompt_embeddings != 0), cat, clone)`: the two branches give token
/// sequences of different lengths, so the exported length is a fresh symbol bound when the
/// program runs (an `If` node in ONNX), and it checks, as the seeds do with `torch._check`,
/// that the tokens are not empty before the transformer reads them. The rest of the forward
/// is the original's. It can go where the model tests the prompts' presence instead of their
/// values, as transformers 5.23 does (`sparse_prompt_embeddings is not None`).
#[patch(target = SamMaskDecoder::forward, family = "transformers")]
pub fn patched_forward(
    this: &SamMaskDecoder,
    image_embeddings: &Tensor,
    image_positional_embeddings: &Tensor,
    sparse_prompt_embeddings: Option<&Tensor>,
    dense_prompt_embeddings: &Tensor,
    multimask_output: bool,
) -> Result<(Tensor, Tensor)> {
    let batch = image_embeddings.size(0)?;
    let Some(sparse) = sparse_prompt_embeddings else {
        let tokens = this.output_tokens(&batch, &onnx_diagnostic_core::SymInt::new(1))?;
        return this.decode(
            &tokens,
            image_embeddings,
            image_positional_embeddings,
            dense_prompt_embeddings,
            multimask_output,
        );
    };
    let output_tokens = this.output_tokens(&batch, &sparse.size(1)?)?;
    let not_empty = sparse.ne_scalar(0.0)?.any(&[], false)?;
    let tokens = cond(
        &not_empty,
        |x| Ok(vec![Tensor::cat(&[&x[0], &x[1]], 2)?]),
        |x| Ok(vec![x[0].copy()?]),
        &[output_tokens, sparse.clone()],
    )?
    .remove(0);
    for (d, size) in tokens.shape().iter().enumerate() {
        check_size(
            size,
            Rel::Ne,
            0,
            &format!("dimension {d} of the mask decoder's tokens"),
        )?;
    }
    this.decode(
        &tokens,
        image_embeddings,
        image_positional_embeddings,
        dense_prompt_embeddings,
        multimask_output,
    )
}
