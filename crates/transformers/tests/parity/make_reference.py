#!/usr/bin/env python3
"""Produce reference checkpoints and outputs from HF transformers for Rust parity tests.

Usage: python make_reference.py OUT_DIR CONFIG_JSON_PATH [ARCH] [--dtype=float16|bfloat16]
       [--checkpoint-dtype=float16|bfloat16] [--max-shard-size=SIZE] [--static-cache=SLOTS]
       [--batch=N] [--next-tokens=N]

ARCH defaults to the config's ``architectures[0]`` (e.g. LlamaForCausalLM).
The model is built from the config only (random init, torch.manual_seed(0)), never downloaded.
The checkpoint is saved in float32; with ``--dtype`` the model is then converted with
``model.to(dtype)`` (what onnx-diagnostic's ``validate --dtype`` does) before the two steps run,
so the saved logits and cache tensors are of that type.
With ``--checkpoint-dtype`` the model is converted before it is saved (a checkpoint in that type,
its config saying so), then loaded back with ``from_pretrained`` (its default ``dtype="auto"``),
and that loaded model runs: the reference of a real checkpoint. ``--max-shard-size`` shards it
(``model.safetensors.index.json``). With ``--static-cache=SLOTS`` the prompt step runs on an
empty ``StaticCache(config=model.config, max_cache_len=SLOTS)`` (its sliding layers
``StaticSlidingWindowLayer``s), which the second step grows. ``--batch`` (2) and
``--next-tokens`` (3) size the steps (the prompt has 5 tokens). Mixture-of-experts models run
transformers' eager experts loop, and ``expert_counts[_next]_{i}`` hold how many tokens each
expert of the i-th sparse layer got in each step.

Writes into OUT_DIR:
  config.json, model.safetensors  (save_pretrained, single file)
  io.safetensors                  (inputs, logits and per-layer KV cache for a prefill step
                                   and a follow-up step reusing the cache)
Prints ``ok <OUT_DIR>`` on success; exits non-zero with a message on failure.
"""
import inspect
import json
import os
import sys


def die(msg, code=1):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def build_config(cfg):
    import transformers

    cfg = dict(cfg)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        die("config JSON has no 'model_type' key")
    # Never let a config request a non-fp32 dtype or a non-eager attention here.
    for k in ("torch_dtype", "dtype", "attn_implementation", "_attn_implementation"):
        cfg.pop(k, None)
    return transformers.AutoConfig.for_model(model_type, **cfg)


def build_model(config, arch):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    model = None
    try:
        auto_cls = AutoModelForCausalLM._model_mapping[type(config)]
    except Exception:
        auto_cls = None
    # Mixture-of-experts models run transformers' eager experts loop (the default is
    # grouped_mm), the code the Rust models are written after.
    kwargs = {"attn_implementation": "eager"}
    if getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None):
        kwargs["experts_implementation"] = "eager"
    if arch is None or (auto_cls is not None and auto_cls.__name__ == arch):
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        cls = getattr(transformers, arch, None)
        if cls is None:
            die(f"unknown architecture class '{arch}' in transformers {transformers.__version__}")
        model = cls._from_config(config, **kwargs)
    model = model.to(torch.float32).eval()
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        die(f"model uses attn implementation {impl!r}, expected 'eager'")
    return model


def cache_layers(cache, num_layers):
    """Return [(key, value)] per layer, each cloned, shape [batch, kv_heads, seq, head_dim].

    Supports transformers 5 (cache.layers[i].keys/.values), transformers 4.x
    (cache.key_cache / cache.value_cache) and legacy tuple-of-tuples caches.
    """
    if cache is None:
        die("model returned no past_key_values (use_cache=True was passed)")
    out = []
    if hasattr(cache, "layers"):  # transformers >= 4.56 / 5.x
        layers = cache.layers
        for i in range(len(layers)):
            k, v = layers[i].keys, layers[i].values
            out.append((k, v))
    elif hasattr(cache, "key_cache"):  # older DynamicCache
        for k, v in zip(cache.key_cache, cache.value_cache):
            out.append((k, v))
    elif isinstance(cache, (tuple, list)):  # legacy format
        for layer in cache:
            out.append((layer[0], layer[1]))
    else:
        die(f"unsupported cache type {type(cache).__name__}")
    if len(out) != num_layers:
        die(f"cache has {len(out)} layers, expected {num_layers}")
    res = []
    for i, (k, v) in enumerate(out):
        if k is None or v is None or k.dim() != 4:
            die(f"cache layer {i} has no 4-D key/value tensors")
        res.append((k.detach().clone().contiguous(), v.detach().clone().contiguous()))
    return res


def main(argv):
    dtype = None
    checkpoint_dtype = None
    max_shard_size = "1000GB"
    static_slots = None
    batch, seq, seq_next = 2, 5, 3
    for a in [a for a in argv if a.startswith("--")]:
        argv.remove(a)
        key, value = a.split("=", 1)
        if key == "--dtype":
            dtype = value
        elif key == "--checkpoint-dtype":
            checkpoint_dtype = value
        elif key == "--max-shard-size":
            max_shard_size = value
        elif key == "--static-cache":
            static_slots = int(value)
        elif key == "--batch":
            batch = int(value)
        elif key == "--next-tokens":
            seq_next = int(value)
        else:
            die(f"unknown option {a}", code=2)
    if len(argv) not in (3, 4):
        die("usage: make_reference.py OUT_DIR CONFIG_JSON_PATH [ARCH]", code=2)
    out_dir, cfg_path = argv[1], argv[2]
    arch = argv[3] if len(argv) == 4 else None

    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except Exception as e:
        die(f"cannot read config JSON {cfg_path}: {e}")
    if arch is None:
        archs = cfg.get("architectures") or []
        if not archs:
            die("no ARCH given and config has no 'architectures'")
        arch = archs[0]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = build_config(cfg)
    model = build_model(config, arch)

    os.makedirs(out_dir, exist_ok=True)
    save_kwargs = {"max_shard_size": max_shard_size}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    if checkpoint_dtype is not None:
        if checkpoint_dtype not in ("float16", "bfloat16"):
            die(f"--checkpoint-dtype={checkpoint_dtype}: expected float16 or bfloat16")
        model = model.to(getattr(torch, checkpoint_dtype))
    model.save_pretrained(out_dir, **save_kwargs)
    files = ("model.safetensors", "model.safetensors.index.json")
    if not any(os.path.isfile(os.path.join(out_dir, f)) for f in files):
        die(f"save_pretrained wrote no safetensors checkpoint in {out_dir}")
    if checkpoint_dtype is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
        if model.dtype != getattr(torch, checkpoint_dtype):
            die(f"from_pretrained loaded {model.dtype}, expected {checkpoint_dtype}")

    if dtype is not None:
        if dtype not in ("float16", "bfloat16"):
            die(f"--dtype={dtype}: expected float16 or bfloat16")
        model = model.to(getattr(torch, dtype))

    vocab = model.config.vocab_size
    num_layers = model.config.num_hidden_layers

    # The number of tokens each expert of each sparse layer gets, per step (routers are the
    # `*TopKRouter` modules; their third output holds the chosen experts).
    counts = []
    for name, module in model.named_modules():
        if type(module).__name__.endswith("TopKRouter"):
            n_experts = module.num_experts

            def hook(mod, args, output, name=name, n=n_experts):
                counts.append(torch.bincount(output[2].reshape(-1), minlength=n))

            module.register_forward_hook(hook)

    torch.manual_seed(1)
    input_ids = torch.randint(0, vocab, (batch, seq), dtype=torch.int64)
    attention_mask = torch.ones((batch, seq), dtype=torch.int64)
    input_ids_next = torch.randint(0, vocab, (batch, seq_next), dtype=torch.int64)
    attention_mask_next = torch.ones((batch, seq + seq_next), dtype=torch.int64)

    first_cache = None
    if static_slots is not None:
        from transformers import StaticCache

        first_cache = StaticCache(config=model.config, max_cache_len=static_slots)
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=first_cache,
            use_cache=True,
        )
        logits = out.logits.detach().clone()
        counts_first, counts[:] = list(counts), []
        # Clone before step 2: the cache object is updated in place.
        kv1 = cache_layers(out.past_key_values, num_layers)
        out2 = model(
            input_ids=input_ids_next,
            attention_mask=attention_mask_next,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        logits_next = out2.logits.detach().clone()
        kv2 = cache_layers(out2.past_key_values, num_layers)

    # A sliding-window layer keeps only its last positions (sliding_window - 1 of them in
    # transformers 5.23): its length may be shorter, never longer.
    window = getattr(config, "sliding_window", None)
    for step, kv, length in ((1, kv1, seq), (2, kv2, seq + seq_next)) if static_slots is None else ():
        for i, (k, _) in enumerate(kv):
            ok = k.shape[2] == length or (window is not None and k.shape[2] < length)
            if k.shape[0] != batch or not ok:
                die(f"step-{step} cache layer {i} has shape {tuple(k.shape)}")

    tensors = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "logits": logits,
        "input_ids_next": input_ids_next,
        "attention_mask_next": attention_mask_next,
        "logits_next": logits_next,
    }
    for i, c in enumerate(counts_first):
        tensors[f"expert_counts_{i}"] = c
    for i, c in enumerate(counts):
        tensors[f"expert_counts_next_{i}"] = c
    for i, (k, v) in enumerate(kv1):
        tensors[f"present_key_{i}"] = k
        tensors[f"present_value_{i}"] = v
    for i, (k, v) in enumerate(kv2):
        tensors[f"present_key_next_{i}"] = k
        tensors[f"present_value_next_{i}"] = v
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    save_file(tensors, os.path.join(out_dir, "io.safetensors"), metadata={"arch": arch})
    print(f"ok {out_dir}")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except SystemExit:
        raise
    except Exception as e:  # clear message, non-zero exit
        import traceback

        traceback.print_exc()
        die(f"{type(e).__name__}: {e}")
