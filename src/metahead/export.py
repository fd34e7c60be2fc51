"""Export an avatar's generator for deployment: G with spectral norm folded in and the person's AdaIN
parameters ψ as constants, landmark images (B, 3, S, S) in [-1, 1] → frames (B, 3, S, S) in [-1, 1].

- `export_generator` → a torch.export ExportedProgram (batch size dynamic); `save_program` writes it
  (`.pt2`, loaded by `torch.export.load(path).module()`), no metahead needed to run it.
- `export_onnx` → an ONNX file (torch.onnx's dynamo exporter; needs the `onnx` and `onnxscript` packages),
  batch size dynamic. Runs in onnxruntime.

    program = export_generator(avatar.generator, avatar.adain_params)
    save_program(program, "me.pt2")
    frames = torch.export.load("me.pt2").module()(landmark_images)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from metahead import perf
from metahead.fileio import atomic_path

MAX_BATCH = 1024  # upper bound of the exported dynamic batch dimension


def render_module(
    generator: nn.Module, adain_params: torch.Tensor, *, channels_last: bool = True
) -> nn.Module:
    """The module that gets exported: `perf.prepare_generator_for_inference(generator, adain_params)` (a copy;
    the caller's G is untouched), on CPU."""
    prepared = perf.prepare_generator_for_inference(generator, adain_params, channels_last=channels_last)
    return prepared.cpu()


def _example(module: nn.Module, batch: int) -> torch.Tensor:
    size = module.generator.cfg.image_size
    return torch.zeros(batch, 3, size, size).contiguous(memory_format=torch.channels_last)


def export_generator(
    generator: nn.Module, adain_params: torch.Tensor, *, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """torch.export of G(·, ψ) with ψ (1, num_adain_params) baked in; batch size dynamic (1..MAX_BATCH),
    or fixed at 2 with dynamic_batch=False. Takes and returns channels_last tensors (any layout works)."""
    module = render_module(generator, adain_params)
    example = _example(module, 2)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"landmark_images": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Write an ExportedProgram atomically (torch.export.save)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.export.save(program, f)
    return path


def export_onnx(
    generator: nn.Module, adain_params: torch.Tensor, path: str | os.PathLike, *, opset: int = 18
) -> Path:
    """Write G(·, ψ) as ONNX (batch dimension dynamic) through torch.onnx's dynamo exporter. Raises
    ImportError naming the missing package when onnx / onnxscript are not installed."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as err:
            raise ImportError(f"ONNX export needs the {package!r} package (pip install {package})") from err
    module = render_module(generator, adain_params, channels_last=False)
    example = torch.zeros(2, 3, module.generator.cfg.image_size, module.generator.cfg.image_size)
    path = Path(path)
    dynamic_shapes = {"landmark_images": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=["landmark_images"],
            output_names=["images"],
            opset_version=opset,
            verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    return path
