#!/usr/bin/env python3
"""Reference checkpoint and outputs of diffusers' UNet2DConditionModel for the Rust tests.

Usage: python make_unet_reference.py OUT_DIR CONFIG_JSON_PATH SETS [--dtype=float16]

The model is built from the config only (``UNet2DConditionModel.from_config``, torch's own
initialisation after ``torch.manual_seed(0)``), saved with ``save_pretrained`` (config.json,
diffusion_pytorch_model.safetensors, float32), then run (converted with ``model.to(dtype)``
first when ``--dtype`` is given) in eval mode with diffusers' default attention processor on
each input set. SETS is ``name:batch:height:width:length,...``; each set's inputs are drawn from
``torch.manual_seed(1 + index)``: ``sample`` N(0, 1) ``[batch, in_channels, height, width]``,
``timestep`` ``[101]`` int64, ``encoder_hidden_states`` N(0, 1) ``[batch, length,
cross_attention_dim]``.

Writes OUT_DIR/checkpoint (the saved model) and OUT_DIR/io.safetensors holding, per set NAME,
``NAME.sample``, ``NAME.timestep``, ``NAME.encoder_hidden_states`` and ``NAME.out``, and
``n_parameters`` (the model's parameter count).
"""
import json
import os
import sys


def main():
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    out_dir, cfg_path, sets = sys.argv[1:4]
    dtype = None
    for a in sys.argv[4:]:
        if a.startswith("--dtype="):
            dtype = getattr(torch, a.split("=", 1)[1])
    with open(cfg_path) as f:
        cfg = json.load(f)
    torch.manual_seed(0)
    model = UNet2DConditionModel.from_config(cfg).eval()
    ckpt = os.path.join(out_dir, "checkpoint")
    model.save_pretrained(ckpt, safe_serialization=True)
    if dtype is not None:
        model = model.to(dtype)
    cross = cfg.get("cross_attention_dim", 1280)
    if isinstance(cross, list):
        cross = cross[0]
    # The parameter count diffusers gives, for the tests to compare theirs with.
    io = {"n_parameters": torch.tensor([sum(p.numel() for p in model.parameters())])}
    for i, spec in enumerate(sets.split(",")):
        name, b, h, w, length = spec.split(":")
        b, h, w, length = int(b), int(h), int(w), int(length)
        torch.manual_seed(1 + i)
        sample = torch.randn(b, model.config.in_channels, h, w)
        timestep = torch.tensor([101], dtype=torch.int64)
        enc = torch.randn(b, length, cross)
        with torch.no_grad():
            out = model(
                sample.to(dtype or torch.float32),
                timestep,
                enc.to(dtype or torch.float32),
            ).sample
        io[f"{name}.sample"] = sample
        io[f"{name}.timestep"] = timestep
        io[f"{name}.encoder_hidden_states"] = enc
        io[f"{name}.out"] = out.contiguous()
    save_file(io, os.path.join(out_dir, "io.safetensors"))
    print(f"ok {out_dir}")


if __name__ == "__main__":
    main()
