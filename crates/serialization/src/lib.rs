//! Serializers that flatten cache and output classes (`DynamicCache`, `EncoderDecoderCache`,
//! ...) into named tensors and back (DESIGN.md section 3, "pytree"). Filled by the pytree issue.
