"""Builds a Qwen2-VL (or Qwen2.5-VL, `"model_type": "qwen2_5_vl"`) model with transformers from a config, saves it with `save_pretrained`, and
runs it on input sets whose images differ in number and size (compared by
tests/qwen2_vl_parity.rs and the CLI tests).

usage: make_qwen2_vl_reference.py OUT CONFIG --sets=SETS [--dtype=float16]

CONFIG is a `config.json` (nested `text_config` / `vision_config`, or the flat form of older
checkpoints). SETS (`;`-separated) is `name:batch:text:past:grids;...` where `grids` is `TxHxW,TxHxW` (the grid
of each image in patches, `-` for no image): image i goes to row i % batch, each row holds its
images as `<vision_start> <image>*n <vision_end>` after `text` text tokens, and shorter rows are
padded with text tokens (attention mask 1) to the longest.

Writes OUT (the saved model) and OUT/io.safetensors: per set NAME.input_ids,
NAME.attention_mask, NAME.position_ids (`get_rope_index` of the new tokens, shifted by the past
length), NAME.mm_token_type_ids, NAME.pixel_values, NAME.image_grid_thw, NAME.key_<i> and
NAME.value_<i> (the past), and what transformers returns: NAME.logits, NAME.out_key_<i>,
NAME.out_value_<i>, NAME.image_features (the merged features of every image, concatenated).
"""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    DynamicCache,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)


def parse_sets(spec: str):
    sets = []
    for item in spec.split(";"):
        name, batch, text, past, grids = item.split(":")
        grids = [] if grids == "-" else [tuple(int(x) for x in g.split("x")) for g in grids.split(",")]
        sets.append((name, int(batch), int(text), int(past), grids))
    return sets


def make_set(model, config, batch, text, past, grids, dtype):
    cfg = model.config
    vis = cfg.vision_config
    txt = cfg.text_config
    merge = vis.spatial_merge_size
    rows = [[] for _ in range(batch)]
    types = [[] for _ in range(batch)]
    gen = torch.Generator().manual_seed(batch * 1000 + text * 10 + past)
    for r in range(batch):
        ids = torch.randint(0, cfg.vision_end_token_id - 10, (text,), generator=gen).tolist()
        rows[r] += ids
        types[r] += [0] * text
    for i, (t, h, w) in enumerate(grids):
        r = i % batch
        n = t * h * w // (merge * merge)
        rows[r] += [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]
        types[r] += [0] + [1] * n + [0]
    longest = max(len(r) for r in rows)
    for r in range(batch):
        pad = longest - len(rows[r])
        rows[r] += torch.randint(0, cfg.vision_end_token_id - 10, (pad,), generator=gen).tolist()
        types[r] += [0] * pad
    input_ids = torch.tensor(rows, dtype=torch.int64)
    mm_token_type_ids = torch.tensor(types, dtype=torch.int64)
    out = {"input_ids": input_ids, "mm_token_type_ids": mm_token_type_ids}
    out["attention_mask"] = torch.ones((batch, past + longest), dtype=torch.int64)
    grid = torch.tensor(grids, dtype=torch.int64).reshape(-1, 3)
    if grids:
        position_ids, _ = model.model.get_rope_index(
            input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=grid
        )
    else:
        position_ids = torch.arange(longest).view(1, 1, -1).expand(3, batch, -1)
    out["position_ids"] = (position_ids + past).contiguous()
    patch = vis.in_channels * vis.temporal_patch_size * vis.patch_size * vis.patch_size
    n_patches = int(sum(t * h * w for t, h, w in grids))
    out["pixel_values"] = torch.randn((n_patches, patch), generator=gen).to(dtype)
    out["image_grid_thw"] = grid
    head_dim = getattr(txt, "head_dim", None) or txt.hidden_size // txt.num_attention_heads
    cache = DynamicCache(config=txt)
    for i in range(txt.num_hidden_layers):
        k = torch.randn((batch, txt.num_key_value_heads, past, head_dim), generator=gen).to(dtype)
        v = torch.randn((batch, txt.num_key_value_heads, past, head_dim), generator=gen).to(dtype)
        out[f"key_{i}"] = k
        out[f"value_{i}"] = v
        cache.update(k.clone(), v.clone(), i)
    kwargs = {}
    if grids:
        kwargs = dict(pixel_values=out["pixel_values"], image_grid_thw=grid)
    with torch.no_grad():
        res = model(
            input_ids=input_ids,
            attention_mask=out["attention_mask"],
            position_ids=out["position_ids"],
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        out["logits"] = res.logits
        for i, layer in enumerate(res.past_key_values.layers):
            out[f"out_key_{i}"] = layer.keys
            out[f"out_value_{i}"] = layer.values
        if grids:
            feats = model.model.get_image_features(out["pixel_values"], grid)
            out["image_features"] = torch.cat(feats.pooler_output, dim=0)
    return out


def main(out: str, config_path: str, *options: str) -> None:
    dtype = torch.float32
    spec = ""
    for o in options:
        if o.startswith("--dtype="):
            dtype = getattr(torch, o.split("=", 1)[1])
        elif o.startswith("--sets="):
            spec = o.split("=", 1)[1]
    with open(config_path) as f:
        raw = json.load(f)
    if raw.get("model_type") == "qwen2_5_vl":
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    else:
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    raw.pop("model_type", None)
    config = config_class(**raw)
    torch.manual_seed(0)
    model = model_class(config).eval().to(dtype)
    model.save_pretrained(out)
    io = {}
    for name, batch, text, past, grids in parse_sets(spec):
        for k, v in make_set(model, config, batch, text, past, grids, dtype).items():
            io[f"{name}.{k}"] = v.contiguous()
    io["n_parameters"] = torch.tensor(sum(p.numel() for p in model.parameters()))
    save_file(io, f"{out}/io.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
