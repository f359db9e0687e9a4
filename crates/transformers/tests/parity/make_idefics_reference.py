"""Builds an IdeficsForVisionText2Text with transformers from a config, saves it with
`save_pretrained`, and runs it on input sets with other numbers of images, tokens and cached
positions (compared by tests/idefics_parity.rs and the CLI tests).

usage: make_idefics_reference.py OUT CONFIG --sets=SETS

SETS (`;`-separated) is `name:batch:seq:past:images:mask:positions`: `batch` rows of `seq`
new tokens (ids over the whole vocabulary, additional tokens included) after `past` cached
positions, `images` images per row; `mask` is `ones` (every token attends every image) or
`causal` (token t of row r attends the images up to (t + r) % (images + 1): the first
tokens attend none); with 0 images transformers is run on one image no token attends (it
cannot encode zero images), which gives the same text outputs; `positions` is `given` (after the cache) or `none` (the model computes
them from the attention mask).

Writes OUT (the saved model) and OUT/io.safetensors: per set NAME.input_ids,
NAME.attention_mask, NAME.position_ids (when given), NAME.pixel_values,
NAME.image_attention_mask, NAME.key_<i> / NAME.value_<i> (the past), and what transformers
returns: NAME.logits, NAME.out_key_<i>, NAME.out_value_<i>, NAME.image_hidden_states; and
n_parameters.
"""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import DynamicCache, IdeficsConfig, IdeficsForVisionText2Text


def make_set(model, batch, seq, past, images, mask, positions, gen):
    cfg = model.config
    vis = cfg.vision_config
    vocab = cfg.vocab_size + cfg.additional_vocab_size
    out = {
        "input_ids": torch.randint(0, vocab, (batch, seq), generator=gen),
        "attention_mask": torch.ones(batch, past + seq, dtype=torch.int64),
        "pixel_values": torch.randn(
            (batch, images, vis.num_channels, vis.image_size, vis.image_size), generator=gen
        ).clamp(-1, 1),
    }
    if mask == "ones":
        out["image_attention_mask"] = torch.ones(batch, seq, images, dtype=torch.int64)
    else:
        t = torch.arange(seq)[None, :, None] + torch.arange(batch)[:, None, None]
        seen = t % (images + 1)
        out["image_attention_mask"] = (torch.arange(images)[None, None, :] < seen).to(torch.int64)
    if positions == "given":
        out["position_ids"] = torch.arange(past, past + seq).expand(batch, -1).contiguous()
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    cache = DynamicCache(config=cfg)
    for i in range(cfg.num_hidden_layers):
        k = torch.randn((batch, heads, past, head_dim), generator=gen)
        v = torch.randn((batch, heads, past, head_dim), generator=gen)
        cache.update(k, v, i)
        out[f"key_{i}"] = k.clone()
        out[f"value_{i}"] = v.clone()
    pixel_values, image_mask = out["pixel_values"], out["image_attention_mask"]
    if images == 0:
        # transformers cannot encode zero images (the tower reshapes 0 elements with a -1):
        # one image that no token attends gives the same text outputs (every gate is 0).
        pixel_values = torch.randn(
            (batch, 1, vis.num_channels, vis.image_size, vis.image_size), generator=gen
        )
        image_mask = torch.zeros(batch, seq, 1, dtype=torch.int64)
    with torch.no_grad():
        res = model(
            input_ids=out["input_ids"],
            attention_mask=out["attention_mask"],
            position_ids=out.get("position_ids"),
            past_key_values=cache,
            pixel_values=pixel_values,
            image_attention_mask=image_mask,
            use_cache=True,
        )
        out["logits"] = res.logits
        for i, layer in enumerate(res.past_key_values.layers):
            out[f"out_key_{i}"] = layer.keys
            out[f"out_value_{i}"] = layer.values
        out["image_hidden_states"] = res.image_hidden_states[:, :images]
    return out


def main(out: str, config_path: str, *options: str) -> None:
    spec = ""
    for o in options:
        if o.startswith("--sets="):
            spec = o.split("=", 1)[1]
    with open(config_path) as f:
        raw = json.load(f)
    raw.pop("model_type", None)
    config = IdeficsConfig(**raw)
    torch.manual_seed(0)
    model = IdeficsForVisionText2Text(config).eval()
    with torch.no_grad():
        # Gates and norms are ones (or zeros) untrained: random values, so that they matter.
        for name, p in model.named_parameters():
            if "alpha" in name:
                p.normal_(0.0, 1.0)
            elif "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            elif p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    gen = torch.Generator().manual_seed(1)
    io = {"n_parameters": torch.tensor(sum(p.numel() for p in model.parameters()))}
    for item in spec.split(";"):
        name, batch, seq, past, images, mask, positions = item.split(":")
        made = make_set(model, int(batch), int(seq), int(past), int(images), mask, positions, gen)
        for k, v in made.items():
            io[f"{name}.{k}"] = v.contiguous()
    save_file(io, f"{out}/io.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
