"""Builds a Gemma3ForConditionalGeneration with transformers from a config, saves it with
`save_pretrained`, and runs it on input sets whose images differ in number and placement
(compared by tests/gemma3_parity.rs and the CLI tests).

usage: make_gemma3_reference.py OUT CONFIG --sets=SETS

CONFIG is a `config.json` of a `Gemma3Config` (`text_config`, `vision_config`). SETS
(`;`-separated) is `name:batch:text:past:rows:types` where `rows` lists the row of each image
(`0,0,1`; `-` for no image): each row holds `text` text tokens, then its images as
`<boi> <image>*mm_tokens_per_image <eoi>`, and shorter rows are padded with text tokens
(attention mask 1). `types` is `all` (`token_type_ids` over the cached and the new positions,
what `generate` gives a chunked prefill), `new` (the new positions only) or `none`.

Writes OUT (the saved model) and OUT/io.safetensors: per set NAME.input_ids,
NAME.attention_mask, NAME.position_ids, NAME.token_type_ids (unless `none`),
NAME.pixel_values, NAME.key_<i> and NAME.value_<i> (the past as the cache holds it: a sliding
layer keeps its last `sliding_window - 1` positions), and what transformers returns:
NAME.logits, NAME.out_key_<i>, NAME.out_value_<i>, NAME.image_features.
"""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import DynamicCache, Gemma3Config, Gemma3ForConditionalGeneration


def parse_sets(spec: str):
    sets = []
    for item in spec.split(";"):
        name, batch, text, past, rows, types = item.split(":")
        rows = [] if rows == "-" else [int(r) for r in rows.split(",")]
        sets.append((name, int(batch), int(text), int(past), rows, types))
    return sets


def make_set(model, batch, text, past, image_rows, types_mode):
    cfg = model.config
    vis = cfg.vision_config
    txt = cfg.text_config
    n = cfg.mm_tokens_per_image
    high = min(cfg.boi_token_index, cfg.eoi_token_index, cfg.image_token_index, txt.vocab_size)
    gen = torch.Generator().manual_seed(batch * 1000 + text * 10 + past)
    rows = [torch.randint(0, high, (text,), generator=gen).tolist() for _ in range(batch)]
    types = [[0] * (past + text) for _ in range(batch)]
    for r in image_rows:
        rows[r] += [cfg.boi_token_index] + [cfg.image_token_index] * n + [cfg.eoi_token_index]
        types[r] += [0] + [1] * n + [0]
    longest = max(len(r) for r in rows)
    for r in range(batch):
        pad = longest - len(rows[r])
        rows[r] += torch.randint(0, high, (pad,), generator=gen).tolist()
        types[r] += [0] * pad
    out = {"input_ids": torch.tensor(rows, dtype=torch.int64)}
    out["attention_mask"] = torch.ones((batch, past + longest), dtype=torch.int64)
    out["position_ids"] = (torch.arange(longest) + past).unsqueeze(0).expand(batch, -1).contiguous()
    token_types = torch.tensor(types, dtype=torch.int64)
    if types_mode == "new":
        token_types = token_types[:, past:]
    if types_mode != "none":
        out["token_type_ids"] = token_types.contiguous()
    out["pixel_values"] = (
        torch.randn((len(image_rows), vis.num_channels, vis.image_size, vis.image_size), generator=gen)
        .clamp(-1, 1)
    )
    cache = DynamicCache(config=txt)
    for i in range(txt.num_hidden_layers):
        k = torch.randn((batch, txt.num_key_value_heads, past, txt.head_dim), generator=gen)
        v = torch.randn((batch, txt.num_key_value_heads, past, txt.head_dim), generator=gen)
        cache.update(k, v, i)
    for i, layer in enumerate(cache.layers):
        out[f"key_{i}"] = layer.keys.clone()
        out[f"value_{i}"] = layer.values.clone()
    kwargs = {}
    if image_rows:
        kwargs["pixel_values"] = out["pixel_values"]
    if "token_type_ids" in out:
        kwargs["token_type_ids"] = out["token_type_ids"]
    with torch.no_grad():
        res = model(
            input_ids=out["input_ids"],
            attention_mask=out["attention_mask"],
            position_ids=out["position_ids"],
            past_key_values=cache if past > 0 else None,
            use_cache=True,
            **kwargs,
        )
        out["logits"] = res.logits
        for i, layer in enumerate(res.past_key_values.layers):
            out[f"out_key_{i}"] = layer.keys
            out[f"out_value_{i}"] = layer.values
        if image_rows:
            out["image_features"] = model.model.get_image_features(out["pixel_values"]).pooler_output
    return out


def main(out: str, config_path: str, *options: str) -> None:
    spec = ""
    for o in options:
        if o.startswith("--sets="):
            spec = o.split("=", 1)[1]
    with open(config_path) as f:
        raw = json.load(f)
    raw.pop("model_type", None)
    config = Gemma3Config(**raw)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # transformers zeroes the projection and the one-centred norms: random values, so that
        # the images and the norms matter.
        for name, p in model.named_parameters():
            if "mm_input_projection_weight" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(out)
    io = {}
    for name, batch, text, past, rows, types in parse_sets(spec):
        for k, v in make_set(model, batch, text, past, rows, types).items():
            io[f"{name}.{k}"] = v.contiguous()
    io["n_parameters"] = torch.tensor(sum(p.numel() for p in model.parameters()))
    save_file(io, f"{out}/io.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
