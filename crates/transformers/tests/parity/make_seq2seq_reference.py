#!/usr/bin/env python3
"""Reference checkpoints and outputs of transformers' encoder-decoders for the Rust parity tests.

Usage: python make_seq2seq_reference.py OUT_DIR CONFIG_JSON_PATH [--dtype=float16|bfloat16]
       [--inf] [--base]

The model is ``AutoModelForSeq2SeqLM.from_config`` of the config (random init,
``torch.manual_seed(0)``, eager attention), saved in float32 with ``save_pretrained``; with
``--dtype`` it is then converted with ``model.to(dtype)`` before it runs. ``--inf`` scales the
first feature of the last encoder layer's ``final_layer_norm`` by 1e5 (before saving) so that
its float16 output overflows (the clamp branch fires; finite in float32); ``clamped`` in the
output says whether it did.

Two steps, as ``generate`` runs them: the encoder on ``input_ids`` (the second row padded) and
the decoder on ``decoder_input_ids`` with an empty cache, then the decoder on
``decoder_input_ids_next`` with ``encoder_outputs`` and the grown ``EncoderDecoderCache``.
Writes ``io.safetensors``: the inputs, ``logits``, ``encoder_last_hidden_state``, and per layer
``self_key_i``/``self_value_i``/``cross_key_i``/``cross_value_i`` after each step (``_next``
for the second). Prints ``ok OUT_DIR``.

With ``--base`` the model is ``AutoModel.from_config`` (``BartModel``), run as the
feature-extraction and summarization sets run it: ``input_ids`` and ``attention_mask`` only (the
decoder's inputs are the source shifted right), first without a cache, then with an
``EncoderDecoderCache`` of 5 self-attention positions and ``src`` cross-attention ones
(``past_self_key_i``, ..., ``past_cross_value_i``); writes ``last_hidden_state``,
``encoder_last_hidden_state`` and the cache layers, ``_next`` for the cached call.
"""
import json
import os
import sys


def die(msg, code=1):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    dtype = None
    inf = False
    base = False
    for a in [a for a in argv if a.startswith("--")]:
        argv.remove(a)
        if a.startswith("--dtype="):
            dtype = a.split("=", 1)[1]
        elif a == "--inf":
            inf = True
        elif a == "--base":
            base = True
        else:
            die(f"unknown option {a}", code=2)
    if len(argv) != 3:
        die("usage: make_seq2seq_reference.py OUT_DIR CONFIG_JSON_PATH", code=2)
    out_dir, cfg_path = argv[1], argv[2]
    with open(cfg_path) as f:
        cfg = json.load(f)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    model_type = cfg.pop("model_type")
    for k in ("torch_dtype", "dtype", "attn_implementation", "_attn_implementation"):
        cfg.pop(k, None)
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    auto = AutoModel if base else AutoModelForSeq2SeqLM
    model = auto.from_config(config, attn_implementation="eager")
    model = model.to(torch.float32).eval()
    arch = (cfg.get("architectures") or [None])[0]
    if arch is not None and type(model).__name__ != arch:
        die(f"built {type(model).__name__}, the config says {arch}")
    if inf:
        with torch.no_grad():
            model.model.encoder.layers[-1].final_layer_norm.weight[0] *= 1e5
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))

    vocab = model.config.vocab_size
    pad = model.config.pad_token_id
    torch.manual_seed(1)
    batch, src, tgt, tgt_next = 2, 7, 4, 2
    input_ids = torch.randint(0, vocab, (batch, src), dtype=torch.int64)
    attention_mask = torch.ones((batch, src), dtype=torch.int64)
    attention_mask[1, -2:] = 0
    input_ids[1, -2:] = pad
    decoder_input_ids = torch.randint(0, vocab, (batch, tgt), dtype=torch.int64)
    decoder_input_ids_next = torch.randint(0, vocab, (batch, tgt_next), dtype=torch.int64)

    def layers(cache):
        out = {}
        for name, c in (("self", cache.self_attention_cache), ("cross", cache.cross_attention_cache)):
            for i, layer in enumerate(c.layers):
                out[f"{name}_key_{i}"] = layer.keys.detach().clone()
                out[f"{name}_value_{i}"] = layer.values.detach().clone()
        return out

    if base:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
            tensors = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "last_hidden_state": out.last_hidden_state.detach().clone(),
                "encoder_last_hidden_state": out.encoder_last_hidden_state.detach().clone(),
            }
            tensors.update(layers(out.past_key_values))
            c = model.config
            heads, hd = c.decoder_attention_heads, c.d_model // c.decoder_attention_heads
            self_c, cross_c = DynamicCache(), DynamicCache()
            for i in range(c.decoder_layers):
                for name, cache, length in (("self", self_c, 5), ("cross", cross_c, src)):
                    k = torch.randn(batch, heads, length, hd, dtype=model.dtype)
                    v = torch.randn(batch, heads, length, hd, dtype=model.dtype)
                    tensors[f"past_{name}_key_{i}"] = k.clone()
                    tensors[f"past_{name}_value_{i}"] = v.clone()
                    cache.update(k, v, i)
            out2 = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=EncoderDecoderCache(self_c, cross_c),
                use_cache=True,
            )
            tensors["last_hidden_state_next"] = out2.last_hidden_state.detach().clone()
            for k, v in layers(out2.past_key_values).items():
                tensors[k.replace("_key_", "_key_next_").replace("_value_", "_value_next_")] = v
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "io.safetensors"))
        print(f"ok {out_dir}")
        return

    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=True,
        )
        tensors = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_input_ids_next": decoder_input_ids_next,
            "logits": out.logits.detach().clone(),
            "encoder_last_hidden_state": out.encoder_last_hidden_state.detach().clone(),
        }
        tensors.update(layers(out.past_key_values))
        # Whether the last encoder layer clamped its output.
        seen = {}

        def hook(module, args, output):
            seen["clamped"] = bool(
                (output.abs() >= torch.finfo(output.dtype).max - 1000).any()
            ) if output.dtype == torch.float16 else False

        h = model.model.encoder.layers[-1].register_forward_hook(hook)
        model.model.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h.remove()
        tensors["clamped"] = torch.tensor(int(seen["clamped"]))
        out2 = model(
            encoder_outputs=(out.encoder_last_hidden_state,),
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids_next,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        tensors["logits_next"] = out2.logits.detach().clone()
        for k, v in layers(out2.past_key_values).items():
            tensors[k.replace("_key_", "_key_next_").replace("_value_", "_value_next_")] = v
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "io.safetensors"))
    print(f"ok {out_dir}")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except SystemExit:
        raise
    except Exception as e:
        import traceback

        traceback.print_exc()
        die(f"{type(e).__name__}: {e}")
