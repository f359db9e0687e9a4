#!/usr/bin/env python
"""Writes an untrained, real-size checkpoint for the real-size benchmark (benches/real_size).

Usage: make_checkpoint.py {llama-3.2-1b|qwen2.5-0.5b|qwen3-moe-2l|sd15-unet} OUT_DIR

The model is built with transformers from a config written below (the published config.json
values of meta-llama/Llama-3.2-1B and Qwen/Qwen2.5-0.5B; transformers' `Qwen3MoeConfig()` with
2 layers for the mixture of experts), without any network access, with the
normal initialisation transformers applies to an untrained model (seed 0), in bfloat16, and
saved with `save_pretrained` (safetensors). The Llama one is sharded (`max_shard_size="1GB"`)
so that the `model.safetensors.index.json` path is exercised; the Qwen2 one is a single
`model.safetensors`.

When OUT_DIR already holds a checkpoint written by this very script (same script contents,
same model; recorded in `.make_checkpoint.stamp` with the files and their sizes), nothing is
rebuilt.
"""

import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAMP = ".make_checkpoint.stamp"
# Files save_pretrained writes for these models (removed before a rebuild, nothing else is).
OWN_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


def llama_3_2_1b():
    from transformers import LlamaConfig

    return LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=131072,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        pretraining_tp=1,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=128001,
        use_cache=True,
    )


def qwen2_5_0_5b():
    from transformers import Qwen2Config

    return Qwen2Config(
        architectures=["Qwen2ForCausalLM"],
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        # Qwen2Config stores sliding_window=None when use_sliding_window is False.
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=24,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
        use_cache=True,
    )


def qwen3_moe_2l():
    from transformers import Qwen3MoeConfig

    # transformers 5.23's defaults (hidden 2048, 32 heads and 4 key/value heads, 128 experts
    # of 768, 8 per token: the expert layout of Qwen3-30B-A3B) with 2 of the 24 layers: the
    # widths of a real mixture of experts (1.85 B parameters, 3.45 GB in bfloat16) on this machine.
    return Qwen3MoeConfig(architectures=["Qwen3MoeForCausalLM"], num_hidden_layers=2)


def sd15_unet():
    # runwayml/stable-diffusion-v1-5's unet/config.json (block_out_channels 320-640-1280-1280,
    # cross_attention_dim 768, 8 heads, 2 layers per block: 860 M parameters), its sample_size
    # reduced from 64 to 32 as the Python package's text-to-image task reduces it; float32
    # (3.44 GB), made by diffusers.
    return {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 32,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"],
    }


# Models made by diffusers (the others by transformers).
DIFFUSERS = {"sd15-unet"}

# name -> (config builder, max_shard_size given to save_pretrained, None for the default)
MODELS = {
    "sd15-unet": (sd15_unet, None),
    "llama-3.2-1b": (llama_3_2_1b, "1GB"),
    "qwen2.5-0.5b": (qwen2_5_0_5b, None),
    "qwen3-moe-2l": (qwen3_moe_2l, "2GB"),
}


def script_hash():
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def checkpoint_files(out):
    return sorted(
        p.name
        for p in out.iterdir()
        if p.is_file() and (p.name in OWN_FILES or p.name.endswith(".safetensors"))
    )


def up_to_date(out, name):
    """True when OUT_DIR holds the checkpoint this script version writes for `name`."""
    stamp = out / STAMP
    if not (stamp.is_file() and (out / "config.json").is_file()):
        return False
    try:
        s = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if s.get("script_sha256") != script_hash() or s.get("model") != name:
        return False
    files = s.get("files") or {}
    if not any(f.endswith(".safetensors") for f in files):
        return False
    for f, size in files.items():
        p = out / f
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def peak_rss_gb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def main(argv):
    if len(argv) != 3 or argv[1] not in MODELS:
        print(f"usage: {Path(argv[0]).name} {{{'|'.join(MODELS)}}} OUT_DIR", file=sys.stderr)
        return 2
    name, out = argv[1], Path(argv[2])
    build_config, max_shard_size = MODELS[name]

    if out.is_dir() and up_to_date(out, name):
        files = json.loads((out / STAMP).read_text())["files"]
        print(f"make_checkpoint: {out} already holds {name} (same script version), not rebuilt")
        print(f"  parameters: {json.loads((out / STAMP).read_text()).get('parameters')}")
        print(f"  size on disk: {human(sum(files.values()))} in {len(files)} files")
        return 0

    t0 = time.perf_counter()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = build_config()
    if name in DIFFUSERS:
        from diffusers import UNet2DConditionModel

        # torch's own initialisation, float32 (what diffusers' from_config gives).
        model = UNet2DConditionModel.from_config(config)
        want = torch.float32
    else:
        from transformers import AutoModelForCausalLM

        # dtype=bfloat16: the parameters are created (and initialised) in bfloat16, no float32
        # copy.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        want = torch.bfloat16
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    bad = [n for n, p in model.named_parameters() if p.is_meta or p.dtype != want]
    if bad:
        print(f"make_checkpoint: parameters not real {want} tensors: {bad[:5]}", file=sys.stderr)
        return 1
    t_build = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    # A stale or partial checkpoint: remove what save_pretrained writes (and the stamp), only.
    for f in checkpoint_files(out) + [STAMP]:
        (out / f).unlink(missing_ok=True)
    t1 = time.perf_counter()
    # transformers 5 writes safetensors only; its default max_shard_size is "50GB".
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, **kwargs)
    t_save = time.perf_counter() - t1

    files = {f: (out / f).stat().st_size for f in checkpoint_files(out)}
    if "config.json" not in files or not any(f.endswith(".safetensors") for f in files):
        print(f"make_checkpoint: save_pretrained wrote no config.json/safetensors in {out}", file=sys.stderr)
        return 1
    stamp = {
        "script_sha256": script_hash(),
        "model": name,
        "parameters": n_params,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "diffusers": __import__("diffusers").__version__ if name in DIFFUSERS else None,
        "files": files,
    }
    (out / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")

    print(f"make_checkpoint: wrote {name} to {out}")
    print(f"  parameters: {n_params} ({n_params / 1e9:.3f} B), dtype {want}")
    print(f"  size on disk: {human(sum(files.values()))} in {len(files)} files: {', '.join(files)}")
    print(f"  time: build {t_build:.1f} s, save {t_save:.1f} s; peak RSS {peak_rss_gb():.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
