//! The patch of Gemma3's multimodal model.

use onnx_diagnostic_core::{Result, Tensor, check};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::models::gemma3::Gemma3Model;
use tch::Kind;

/// Replaces `Gemma3Model.get_placeholder_mask`, whose check that the image placeholders match
/// the image features is `if inputs_embeds[special_image_mask].numel() !=
/// image_features.numel(): raise ValueError(...)`: a Python branch on a count of the data, which
/// an export cannot take (the number of placeholders is only known at run time). As the seeds'
/// `patched_Gemma3Model.get_placeholder_mask`, the patch keeps the check as
/// `torch._check(...)`: an assertion recorded in the graph and evaluated whenever the program
/// runs, with the mask computed as before. It can go where transformers writes the check in a
/// form export records (5.23's `torch_compilable_check`; transformers PR 41319).
#[patch(target = Gemma3Model::get_placeholder_mask, family = "transformers")]
pub fn patched_get_placeholder_mask(
    this: &Gemma3Model,
    input_ids: &Tensor,
    image_features: &Tensor,
) -> Result<Tensor> {
    let special = input_ids.eq_scalar(this.image_token_id())?;
    let n_tokens = special.to_kind(Kind::Int64)?.sum(&[], false)?;
    let n_features = this.feature_rows(image_features)?;
    // The counts of the example inputs, for the message only.
    let given = image_features
        .concrete_shape()
        .first()
        .copied()
        .unwrap_or(0);
    check(
        &n_tokens.eq(&n_features)?,
        &format!(
            "Image features and image tokens do not match: tokens: {}, features of {given} \
             images",
            n_tokens.as_tch().int64_value(&[])
        ),
    )?;
    special.unsqueeze(-1)
}
