#!/usr/bin/env python3
"""The Python side of the UNet benchmark: torch.export then torch.onnx (dynamo) of a
UNet2DConditionModel directory, as the Python package's ``validate --export onnx-dynamo``
drives them for text-to-image (its onnx-diagnostic 0.9.3 does not import with transformers
5.23, so its exporter calls are made directly): the same inputs (batch 2, sample_size,
``in_channels`` text tokens, timestep 101), its dynamic shapes (``batch`` and
``encoder_length`` only, as ``Dim.DYNAMIC``, which its ``use_dyn_not_str`` makes of the names:
height and width static). With ``--named-dims`` the dims are ``Dim("batch")`` and
``Dim("encoder_length")`` instead: torch.export then fails with "Constraints violated (batch)
... batch = Dim('batch', max=63)", Upsample2D's ``shape[0] >= 64`` check, which
``patched_Upsample2D.forward`` removes on our side.

Usage: python unet_torch_export.py UNET_DIR OUT.onnx [--named-dims]

torch.onnx's dynamo exporter needs onnxscript (``pip install onnxscript`` in the venv; it is
not in scripts/requirements.txt, the tests do not use it).

Prints the export and ONNX conversion times, the ONNX node count (main graph and functions
inlined by onnx.inliner.inline_local_functions when present) and the process's peak resident memory.
"""
import resource
import sys
import time


def main():
    import onnx
    import onnx.inliner
    import torch
    from diffusers import UNet2DConditionModel

    unet_dir, out = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    model = UNet2DConditionModel.from_pretrained(unet_dir).eval()
    t_load = time.perf_counter() - t0
    c = model.config
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    cross = c.cross_attention_dim if isinstance(c.cross_attention_dim, int) else c.cross_attention_dim[0]
    torch.manual_seed(0)
    kwargs = dict(
        sample=torch.randn(2, c.in_channels, size, size),
        timestep=torch.tensor([101], dtype=torch.int64),
        encoder_hidden_states=torch.randn(2, c.in_channels, cross),
    )
    if "--named-dims" in sys.argv[3:]:
        batch = torch.export.Dim("batch")
        length = torch.export.Dim("encoder_length")
    else:
        batch = length = torch.export.Dim.DYNAMIC
    shapes = dict(sample={0: batch}, timestep={}, encoder_hidden_states={0: batch, 1: length})
    t1 = time.perf_counter()
    ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=shapes, strict=False)
    t_export = time.perf_counter() - t1
    t2 = time.perf_counter()
    onx = torch.onnx.export(ep, (), kwargs=kwargs, dynamo=True)
    t_onnx = time.perf_counter() - t2
    print(f"load {t_load:.1f} s, torch.export {t_export:.1f} s, torch.onnx {t_onnx:.1f} s")
    onx.save(out, external_data=True)
    proto = onnx.load(out, load_external_data=False)
    proto = onnx.inliner.inline_local_functions(proto)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)
    print(f"onnx nodes {len(proto.graph.node)}, peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
