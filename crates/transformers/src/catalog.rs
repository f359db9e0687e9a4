//! An offline catalog of model ids → `config.json` contents with their published values (no hub
//! access here; the values are those cached by the onnx-diagnostic wheel, version 0.9.3,
//! `torch_models/hghub/hub_data_cached_configs.py`), reduced as the Python validate reduces
//! them for their task: text-generation and text2text-generation layers to at most 4,
//! feature-extraction and summarization vocabularies to 2056. The `tiny-random/*` ids (the
//! Python package's name for configs it makes itself) are transformers 5.23's default configs
//! of architectures its catalog lacks, reduced further in width (each entry says how).

/// `(model id, config.json)` pairs.
const CONFIGS: &[(&str, &str)] = &[
    (
        // facebook/bart-base's published config.json (a BartModel: feature-extraction), reduced
        // as the Python package reduces feature-extraction configs (its
        // `tasks/feature_extraction.py`): vocab_size 2056, the layers kept ("Bart architecture
        // does not like too much that the number of layers is changed").
        "facebook/bart-base",
        r#"{"activation_dropout": 0.1, "activation_function": "gelu", "add_bias_logits": false,
        "add_final_layer_norm": false, "architectures": ["BartModel"], "attention_dropout": 0.1,
        "bos_token_id": 0, "classif_dropout": 0.1, "classifier_dropout": 0.0, "d_model": 768,
        "decoder_attention_heads": 12, "decoder_ffn_dim": 3072, "decoder_layerdrop": 0.0,
        "decoder_layers": 6, "decoder_start_token_id": 2, "dropout": 0.1,
        "encoder_attention_heads": 12, "encoder_ffn_dim": 3072, "encoder_layerdrop": 0.0,
        "encoder_layers": 6, "eos_token_id": 2, "forced_bos_token_id": 0,
        "forced_eos_token_id": 2, "gradient_checkpointing": false, "init_std": 0.02,
        "is_encoder_decoder": true, "max_position_embeddings": 1024, "model_type": "bart",
        "normalize_before": false, "normalize_embedding": true, "num_beams": 4,
        "num_hidden_layers": 6, "pad_token_id": 1, "scale_embedding": false,
        "torch_dtype": "float32", "transformers_version": "4.12.0.dev0", "use_cache": true,
        "vocab_size": 2056}"#,
    ),
    (
        // facebook/bart-large-cnn's published config.json (summarization), reduced as the
        // Python package reduces summarization configs: vocab_size 2056, the 12 + 12 layers
        // kept.
        "facebook/bart-large-cnn",
        r#"{"_num_labels": 3, "activation_dropout": 0.0, "activation_function": "gelu",
        "add_final_layer_norm": false, "architectures": ["BartForConditionalGeneration"],
        "attention_dropout": 0.0, "bos_token_id": 0, "classif_dropout": 0.0,
        "classifier_dropout": 0.0, "d_model": 1024, "decoder_attention_heads": 16,
        "decoder_ffn_dim": 4096, "decoder_layerdrop": 0.0, "decoder_layers": 12,
        "decoder_start_token_id": 2, "dropout": 0.1, "encoder_attention_heads": 16,
        "encoder_ffn_dim": 4096, "encoder_layerdrop": 0.0, "encoder_layers": 12,
        "eos_token_id": 2, "force_bos_token_to_be_generated": true, "forced_bos_token_id": 0,
        "forced_eos_token_id": 2, "gradient_checkpointing": false, "init_std": 0.02,
        "is_encoder_decoder": true, "max_length": 142, "max_position_embeddings": 1024,
        "model_type": "bart", "normalize_before": false, "num_beams": 4, "num_hidden_layers": 12,
        "output_past": true, "pad_token_id": 1, "scale_embedding": false,
        "transformers_version": "4.7.0.dev0", "use_cache": true, "vocab_size": 2056}"#,
    ),
    (
        // HuggingFaceTB/SmolLM3-3B's published config.json (the Python package's catalog has
        // no SmolLM3), reduced as it reduces text-generation configs: num_hidden_layers
        // min(36, 4), and the per-layer lists (layer_types, no_rope_layers) cut to those 4.
        "HuggingFaceTB/SmolLM3-3B",
        r#"{"architectures": ["SmolLM3ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128012,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 11008, "layer_types": ["full_attention", "full_attention",
        "full_attention", "full_attention"], "max_position_embeddings": 65536,
        "max_window_layers": 28, "mlp_bias": false, "model_type": "smollm3",
        "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0], "num_attention_heads": 16,
        "num_hidden_layers": 4, "num_key_value_heads": 4, "pad_token_id": 128004,
        "pretraining_tp": 2, "rms_norm_eps": 1e-06, "rope_scaling": null,
        "rope_theta": 5000000.0, "sliding_window": null, "torch_dtype": "bfloat16",
        "use_cache": false, "use_sliding_window": false, "vocab_size": 128256}"#,
    ),
    (
        // google/gemma-2-2b's published config.json (transformers 4.44.2; the Python
        // package's catalog has no Gemma2), reduced as it reduces text-generation configs:
        // num_hidden_layers min(26, 4). transformers derives the layer types (sliding, full,
        // sliding, full) from the count.
        "google/gemma-2-2b",
        r#"{"architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
        "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
        "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
        "initializer_range": 0.02, "intermediate_size": 9216, "max_position_embeddings": 8192,
        "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 4,
        "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "torch_dtype": "float32", "transformers_version": "4.44.2", "use_cache": true,
        "vocab_size": 256000}"#,
    ),
    (
        // google/gemma-3-4b-it's published config.json (transformers 4.50: the text and vision
        // fields left out take Gemma3TextConfig's and SiglipVisionConfig's defaults), reduced
        // as the Python package reduces Gemma3 image-text-to-text configs: 4 vision layers
        // (min(27, 4)), text hidden 640 and MLP 1280 (the vision width 1152, the 8 heads of
        // 256, the window of 1024 and the linear rope of factor 8 kept). Beyond it, so that a
        // run fits a test of this machine: 6 text layers of the 34 (five sliding, one full:
        // `sliding_window_pattern` 6 gives no full layer below 6), and images of 224 pixels in
        // 16 x 16 patches pooled to 16 tokens (`mm_tokens_per_image`) for 896 pixels pooled to
        // 256, whose logits over the 262208 tokens would take gigabytes per set.
        "google/gemma-3-4b-it",
        r#"{"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
        "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
        "initializer_range": 0.02, "mm_tokens_per_image": 16, "model_type": "gemma3",
        "text_config": {"hidden_size": 640, "intermediate_size": 1280,
        "model_type": "gemma3_text", "num_hidden_layers": 6,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
        "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
        "vision_config": {"hidden_size": 1152, "image_size": 224, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16,
        "num_hidden_layers": 4, "patch_size": 14, "vision_use_head": false}}"#,
    ),
    (
        "hf-internal-testing/tiny-random-Gemma3ForCausalLM",
        r#"{"architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2,
        "cache_implementation": "hybrid", "eos_token_id": [1, 106],
        "final_logit_softcapping": null, "head_dim": 8, "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 32,
        "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 2,
        "num_hidden_layers": 2, "num_key_value_heads": 1, "pad_token_id": 0,
        "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
        "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512,
        "sliding_window_pattern": 6, "torch_dtype": "float32",
        "transformers_version": "4.52.0.dev0", "use_cache": true, "vocab_size": 262144}"#,
    ),
    (
        "hf-tiny-model-private/tiny-random-PLBartForConditionalGeneration",
        r#"{"activation_dropout": 0.0, "activation_function": "gelu",
        "architectures": ["PLBartForConditionalGeneration"], "attention_dropout": 0.1,
        "bos_token_id": 0, "classifier_dropout": 0.0, "d_model": 16,
        "decoder_attention_heads": 4, "decoder_ffn_dim": 4, "decoder_layerdrop": 0.0,
        "decoder_layers": 2, "dropout": 0.1, "encoder_attention_heads": 4, "encoder_ffn_dim": 4,
        "encoder_layerdrop": 0.0, "encoder_layers": 2, "eos_token_id": 2,
        "forced_eos_token_id": 2, "init_std": 0.02, "is_encoder_decoder": true,
        "max_position_embeddings": 100, "model_type": "plbart", "num_hidden_layers": 2,
        "pad_token_id": 1, "scale_embedding": true, "torch_dtype": "float32",
        "transformers_version": "4.52.0.dev0", "use_cache": true, "vocab_size": 50005}"#,
    ),
    (
        // Its published config has num_hidden_layers 6, which MarianConfig's attribute_map
        // turns into 6 encoder layers (over encoder_layers 2); the Python package reduces
        // num_hidden_layers to min(6, 4): 4 encoder layers, 2 decoder layers.
        "sshleifer/tiny-marian-en-de",
        r#"{"_num_labels": 3, "activation_dropout": 0.0, "activation_function": "swish",
        "add_bias_logits": false, "add_final_layer_norm": false,
        "architectures": ["MarianMTModel"], "attention_dropout": 0.0, "bos_token_id": 0,
        "classif_dropout": 0.0, "d_model": 2, "decoder_attention_heads": 1,
        "decoder_ffn_dim": 2, "decoder_layerdrop": 0.0, "decoder_layers": 2,
        "decoder_start_token_id": 58100, "decoder_vocab_size": 58101, "dropout": 0.1,
        "encoder_attention_heads": 1, "encoder_ffn_dim": 2, "encoder_layerdrop": 0.0,
        "encoder_layers": 2, "eos_token_id": 0, "extra_pos_embeddings": 58101,
        "forced_eos_token_id": 0, "init_std": 0.02, "is_encoder_decoder": true,
        "max_length": 512, "max_position_embeddings": 512, "model_type": "marian",
        "normalize_before": false, "normalize_embedding": false, "num_beams": 2,
        "num_hidden_layers": 4, "pad_token_id": 58100, "scale_embedding": true,
        "share_encoder_decoder_embeddings": true, "static_position_embeddings": true,
        "transformers_version": "4.51.0.dev0", "use_cache": true, "vocab_size": 58101}"#,
    ),
    (
        "arnir0/Tiny-LLM",
        r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "head_dim": 96, "hidden_act": "silu",
        "hidden_size": 192, "initializer_range": 0.02, "intermediate_size": 1024,
        "max_position_embeddings": 1024, "mlp_bias": false, "model_type": "llama",
        "num_attention_heads": 2, "num_hidden_layers": 1, "num_key_value_heads": 1,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "torch_dtype": "float32", "use_cache": true,
        "vocab_size": 32000}"#,
    ),
    (
        "echarlaix/tiny-random-mistral",
        r#"{"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0,
        "attention_probs_dropout_prob": 0.1, "bos_token_id": 1, "eos_token_id": 2,
        "head_dim": 8, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 37, "is_decoder": true,
        "max_position_embeddings": 512, "model_type": "mistral", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": 0,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
        "tie_word_embeddings": false, "torch_dtype": "float32", "type_vocab_size": 16,
        "use_cache": true, "vocab_size": 32000}"#,
    ),
    (
        "echarlaix/tiny-random-PhiForCausalLM",
        r#"{"architectures": ["PhiForCausalLM"], "attention_dropout": 0.0,
        "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "embd_pdrop": 0.0,
        "eos_token_id": 0, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 37, "is_decoder": true,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 512, "model_type": "phi",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4,
        "pad_token_id": 0, "partial_rotary_factor": 0.5, "qk_layernorm": false,
        "resid_pdrop": 0.0, "rope_scaling": null, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "torch_dtype": "float32",
        "transformers_version": "4.51.0.dev0", "type_vocab_size": 16, "use_cache": true,
        "vocab_size": 1024}"#,
    ),
    (
        "microsoft/phi-2",
        r#"{"architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50256,
        "embd_pdrop": 0.0, "eos_token_id": 50256, "head_dim": 80, "hidden_act": "gelu_new",
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 6144,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "phi",
        "num_attention_heads": 32, "num_hidden_layers": 2, "num_key_value_heads": 32,
        "pad_token_id": 0, "partial_rotary_factor": 0.4, "qk_layernorm": false,
        "resid_pdrop": 0.1, "rope_scaling": null, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "torch_dtype": "float16",
        "transformers_version": "4.51.0.dev0", "use_cache": true, "vocab_size": 51200}"#,
    ),
    (
        "fxmarty/tiny-dummy-qwen2",
        r#"{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 8,
        "initializer_range": 0.02, "intermediate_size": 32, "max_position_embeddings": 32768,
        "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": true, "torch_dtype": "float32", "use_cache": true,
        "use_sliding_window": false, "vocab_size": 151936}"#,
    ),
    (
        "fxmarty/tiny-random-GemmaForCausalLM",
        r#"{"architectures": ["GemmaForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 1, "head_dim": 8,
        "hidden_act": "gelu", "hidden_activation": null, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 2, "max_position_embeddings": 500,
        "model_type": "gemma", "num_attention_heads": 2, "num_hidden_layers": 1,
        "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "rope_scaling": null, "rope_theta": 10000.0, "torch_dtype": "float32",
        "use_cache": true, "vocab_size": 256000}"#,
    ),
    (
        "hf-internal-testing/tiny-random-LlamaForCausalLM",
        r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 0, "dtype": "float32", "eos_token_id": 1,
        "head_dim": 4, "hidden_act": "silu", "hidden_size": 16, "initializer_range": 0.02,
        "intermediate_size": 64, "max_position_embeddings": 2048, "mlp_bias": false,
        "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 4, "pad_token_id": -1, "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": false, "use_cache": true, "vocab_size": 32000}"#,
    ),
    (
        // The Python package's catalog has no mixture-of-experts id. This entry is
        // transformers 5.23's `Qwen3MoeConfig()` (its docstring: Qwen3-15B-A2B style; the
        // expert layout of Qwen3-30B-A3B: 128 experts, 8 per token, no renormalisation,
        // every layer sparse) as `save_pretrained` writes it, reduced: the Python package's
        // text-generation reduction (4 layers), plus widths this project's machines can
        // validate in every type (hidden 64, 4 heads and 2 key/value heads of 16, dense MLP
        // 128, experts 32 wide). The vocabulary, the experts and the rest are the defaults.
        "tiny-random/qwen3-moe",
        r#"{"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": null, "decoder_sparse_step": 1,
        "dtype": null, "eos_token_id": null, "head_dim": 16, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 32768, "mlp_only_layers": [], "model_type": "qwen3_moe",
        "moe_intermediate_size": 32, "norm_topk_prob": false, "num_attention_heads": 4,
        "num_experts_per_tok": 8, "num_hidden_layers": 4, "num_key_value_heads": 2,
        "num_local_experts": 128, "output_router_logits": false, "pad_token_id": null,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "router_aux_loss_coef": 0.001, "sliding_window": null, "tie_word_embeddings": false,
        "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}"#,
    ),
    (
        // transformers 5.23's `MixtralConfig()` (Mixtral-8x7B: 8 experts, 2 per token, rope
        // base 1e6, eps 1e-5, no window), reduced as `tiny-random/qwen3-moe` is: 4 layers,
        // hidden 64, 4 heads and 2 key/value heads, experts 128 wide.
        "tiny-random/mixtral",
        r#"{"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 1, "dtype": null, "eos_token_id": 2, "head_dim": null,
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 131072, "model_type": "mixtral",
        "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 4,
        "num_key_value_heads": 2, "num_local_experts": 8, "output_router_logits": false,
        "pad_token_id": null, "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "router_aux_loss_coef": 0.001, "router_jitter_noise": 0.0, "sliding_window": null,
        "tie_word_embeddings": false, "use_cache": true, "vocab_size": 32000}"#,
    ),
    (
        // transformers 5.23's `Qwen3Config()` (its docstring: Qwen3-8B style; head_dim 128
        // as in every Qwen3), reduced as `tiny-random/qwen3-moe` is: 4 layers, hidden 64,
        // 4 heads and 2 key/value heads (of 128), MLP 128.
        "tiny-random/qwen3",
        r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": null, "dtype": null, "eos_token_id": null,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "layer_types": ["full_attention", "full_attention",
        "full_attention", "full_attention"], "max_position_embeddings": 32768,
        "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 4,
        "num_hidden_layers": 4, "num_key_value_heads": 2, "pad_token_id": null,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "sliding_window": null, "tie_word_embeddings": false, "use_cache": true,
        "use_sliding_window": false, "vocab_size": 151936}"#,
    ),
    (
        // Qwen/Qwen2.5-VL-7B-Instruct's published config.json (transformers 4.41 layout: the
        // text fields at the top level, `rope_scaling.type` "mrope"), reduced as the Python
        // package reduces image-text-to-text configs: 2 text layers of hidden 16, MLP 320, 2
        // heads; 2 vision blocks of width 16 (`hidden_size`), 4 heads, MLP 1076, patches of 1
        // pixel (`patch_size`, `spatial_patch_size`) over 2 frames. Beyond it, where its
        // reduction leaves a model that cannot run: 2 key/value heads (4 for 2 heads),
        // `mrope_section` [2, 1, 1] (for a head of 8), `out_hidden_size` 16 (the merged
        // features replace embeddings of the text width). `fullatt_block_indexes` stays
        // [7, 15, 23, 31]: with 2 blocks both attend within windows, as in transformers.
        "Qwen/Qwen2.5-VL-7B-Instruct",
        r#"{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
        "hidden_size": 16, "image_token_id": 151655, "initializer_range": 0.02,
        "intermediate_size": 320, "max_position_embeddings": 128000, "max_window_layers": 28,
        "model_type": "qwen2_5_vl", "num_attention_heads": 2, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_section": [2, 1, 1], "type": "mrope"},
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false,
        "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": true,
        "use_sliding_window": false, "video_token_id": 151656,
        "vision_config": {"depth": 2, "fullatt_block_indexes": [7, 15, 23, 31],
        "hidden_act": "silu", "hidden_size": 16, "in_chans": 3, "intermediate_size": 1076,
        "num_heads": 4, "out_hidden_size": 16, "patch_size": 1, "spatial_merge_size": 2,
        "spatial_patch_size": 1, "temporal_patch_size": 2, "tokens_per_second": 2,
        "window_size": 112}, "vision_end_token_id": 151653, "vision_start_token_id": 151652,
        "vision_token_id": 151654, "vocab_size": 152064}"#,
    ),
    (
        // transformers 5.23's `Qwen2VLConfig()` (Qwen2-VL-7B style), reduced as the Python
        // package's `tasks/image_text_to_text.py` reduces image-text-to-text configs: 2 text
        // layers of hidden 16, MLP 320 and 2 heads, 2 vision blocks of 4 heads, patches of
        // 1 pixel (`patch_size` 1) over 2 frames, vision `hidden_size` 16. Beyond it, where its
        // reduction gives a model that cannot run: 2 key/value heads (the default 8 do not
        // divide 2 heads), `mrope_section` [2, 1, 1] (the default [16, 24, 24] is for a head
        // of 128, not 8), and the vision width `embed_dim` 32 (1280 kept would be 95% of the
        // weights).
        "tiny-random/qwen2-vl",
        r#"{"architectures": ["Qwen2VLForConditionalGeneration"], "image_token_id": 151655,
        "model_type": "qwen2_vl", "video_token_id": 151656, "vision_end_token_id": 151653,
        "vision_start_token_id": 151652, "tie_word_embeddings": false,
        "text_config": {"attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 16,
        "initializer_range": 0.02, "intermediate_size": 320,
        "layer_types": ["full_attention", "full_attention"], "max_position_embeddings": 32768,
        "max_window_layers": 80, "model_type": "qwen2_vl_text", "num_attention_heads": 2,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": null,
        "rms_norm_eps": 1e-05, "rope_parameters": {"mrope_section": [2, 1, 1],
        "rope_theta": 1000000.0, "rope_type": "default"}, "sliding_window": null,
        "use_cache": true, "use_sliding_window": false, "vocab_size": 152064},
        "vision_config": {"depth": 2, "embed_dim": 32, "hidden_act": "quick_gelu",
        "hidden_size": 16, "in_channels": 3, "initializer_range": 0.02, "mlp_ratio": 4,
        "model_type": "qwen2_vl_vision", "num_heads": 4, "patch_size": 1,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"},
        "spatial_merge_size": 2, "temporal_patch_size": 2}}"#,
    ),
    (
        // The Python package's tiny-random/gemma-3 (a Gemma3ForConditionalGeneration at width
        // 32), which its Gemma3 reduction leaves as it is.
        "tiny-random/gemma-3",
        r#"{"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
        "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
        "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
        "text_config": {"attention_bias": false, "attention_dropout": 0.0,
        "attn_logit_softcapping": null, "cache_implementation": "hybrid",
        "final_logit_softcapping": null, "head_dim": 32,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 131072, "model_type": "gemma3_text",
        "num_attention_heads": 1, "num_hidden_layers": 2, "num_key_value_heads": 1,
        "query_pre_attn_scalar": 168, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000.0,
        "sliding_window": 1024, "sliding_window_pattern": 2, "use_cache": true,
        "vocab_size": 262208}, "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0", "vision_config": {"attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh", "hidden_size": 32, "image_size": 896,
        "intermediate_size": 128, "layer_norm_eps": 1e-06, "model_type": "siglip_vision_model",
        "num_attention_heads": 1, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14,
        "vision_use_head": false}}"#,
    ),
    (
        // HuggingFaceM4/tiny-random-idefics's published config (an IdeficsForVisionText2Text,
        // image-text-to-text), reduced as the Python package reduces image-text-to-text
        // configs: 2 vision layers of 5 (the text's 2 layers, the 30-pixel images and the
        // vision MLP of 37 are within its limits).
        "HuggingFaceM4/tiny-random-idefics",
        r#"{"additional_vocab_size": 2, "alpha_initializer": "ones", "alpha_type": "vector",
        "alphas_initializer_range": 0.0, "architectures": ["IdeficsForVisionText2Text"],
        "bos_token_id": 1, "cross_layer_activation_function": "swiglu",
        "cross_layer_interval": 1, "dropout": 0.0, "eos_token_id": 2, "ffn_dim": 64,
        "freeze_lm_head": false, "freeze_text_layers": false,
        "freeze_text_module_exceptions": [], "freeze_vision_layers": false,
        "freeze_vision_module_exceptions": [], "hidden_act": "silu", "hidden_size": 16,
        "initializer_range": 0.02, "intermediate_size": 11008, "max_new_tokens": 128,
        "max_position_embeddings": 128, "model_type": "idefics", "num_attention_heads": 4,
        "num_hidden_layers": 2, "pad_token_id": 0, "perceiver_config": {
        "model_type": "idefics_perciever", "qk_layer_norms_perceiver": false,
        "resampler_depth": 2, "resampler_head_dim": 8, "resampler_n_heads": 2,
        "resampler_n_latents": 16, "use_resampler": false}, "qk_layer_norms": false,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "torch_dtype": "float16",
        "transformers_version": "4.51.0.dev0", "use_cache": true, "use_resampler": true,
        "vision_config": {"attention_dropout": 0.0, "embed_dim": 32, "hidden_act": "gelu",
        "image_size": 30, "initializer_factor": 1.0, "initializer_range": 0.02,
        "intermediate_size": 37, "layer_norm_eps": 1e-05, "model_type": "idefics_vision",
        "num_attention_heads": 4, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 2,
        "vision_model_name": "hf-internal-testing/tiny-random-clip"}, "vocab_size": 32000}"#,
    ),
    (
        // fxmarty/sam-vit-tiny-random's published config (a SamModel, mask-generation), reduced
        // as the Python package reduces mask-generation configs: 2 vision layers of 12 (none
        // of them global: global_attn_indexes are 2, 5, 8, 11).
        "fxmarty/sam-vit-tiny-random",
        r#"{"architectures": ["SamModel"], "initializer_range": 0.02, "model_type": "sam",
        "torch_dtype": "float32", "mask_decoder_config": {"attention_downsample_rate": 2,
        "hidden_act": "relu", "hidden_size": 32, "iou_head_depth": 3,
        "iou_head_hidden_dim": 256, "layer_norm_eps": 1e-06, "mlp_dim": 2048,
        "model_type": "", "num_attention_heads": 8, "num_hidden_layers": 2,
        "num_multimask_outputs": 3}, "prompt_encoder_config": {"hidden_act": "gelu",
        "hidden_size": 32, "image_embedding_size": 64, "image_size": 1024,
        "layer_norm_eps": 1e-06, "mask_input_channels": 16, "model_type": "",
        "num_point_embeddings": 4, "patch_size": 16}, "vision_config": {
        "attention_dropout": 0.0, "dropout": 0.0, "global_attn_indexes": [2, 5, 8, 11],
        "hidden_act": "gelu", "hidden_size": 96, "image_size": 1024,
        "initializer_factor": 1.0, "initializer_range": 1e-10, "intermediate_size": 768,
        "layer_norm_eps": 1e-06, "mlp_dim": 384, "mlp_ratio": 4.0, "model_type": "",
        "num_attention_heads": 1, "num_channels": 3, "num_hidden_layers": 2,
        "num_pos_feats": 16, "output_channels": 32, "patch_size": 16, "projection_dim": 64,
        "qkv_bias": true, "use_abs_pos": true, "use_rel_pos": true, "window_size": 14}}"#,
    ),
    (
        "xenova/tiny-random-Phi3ForCausalLM",
        r#"{"architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
        "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 4096,
        "model_type": "phi3", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 4, "original_max_position_embeddings": 4096,
        "pad_token_id": 32000, "partial_rotary_factor": 1.0, "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
        "sliding_window": 2047, "tie_word_embeddings": false, "torch_dtype": "float32",
        "use_cache": true, "vocab_size": 32064}"#,
    ),
];

/// The `config.json` of a catalog model id.
pub fn config_json(model_id: &str) -> Option<&'static str> {
    CONFIGS
        .iter()
        .find(|(id, _)| *id == model_id)
        .map(|(_, c)| *c)
}

/// The task a catalog id is published with when it is not its class's default (the hub's
/// `pipeline_tag`, which the Python package's validate runs): facebook/bart-large-cnn is a
/// `BartForConditionalGeneration` for summarization.
const TASKS: &[(&str, &str)] = &[("facebook/bart-large-cnn", "summarization")];

/// The task `model_id` is published with, when it is not its class's default.
pub fn task(model_id: &str) -> Option<&'static str> {
    TASKS
        .iter()
        .find(|(id, _)| *id == model_id)
        .map(|(_, t)| *t)
}

/// Every catalog model id, sorted.
pub fn model_ids() -> Vec<&'static str> {
    let mut ids: Vec<_> = CONFIGS.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids
}
