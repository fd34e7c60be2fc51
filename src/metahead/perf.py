"""Speed switches the project's own code shares: precision, memory format, compilation, threads, allocator,
and a render-only copy of G. Measurements behind every default: docs/performance.md.

    from metahead import perf
    with perf.autocast_context("auto", device): ...        # bf16 only where the hardware computes in bf16
    render_g = perf.prepare_generator_for_inference(generator, channels_last=True)
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "auto")

# jemalloc, measured and not the default (docs/performance.md, "Allocator"): with page decay off
# (JEMALLOC_CONF) it is the fastest here (a ReLU over a 16 MB tensor: 3.3-4 ms, glibc tuned 5-6 ms, jemalloc
# with any decay 21-52 ms: every fresh activation page-faults), but it grew without bound in real-data
# training: ~0.7 GB a minute, 12 GB after 40 minutes (thread caches off or one arena: the same), while glibc
# with GLIBC_TUNING stayed flat at the same step time within 5 % (benchmarks/allocator_memory.py). So the
# tuned allocator is glibc's; JEMALLOC_CONF is for a user who preloads jemalloc for a short job.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
# glibc fallback: keep large blocks in the heap instead of mmap/munmap per tensor.
GLIBC_TUNING = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "268435456",
    "MALLOC_TRIM_THRESHOLD_": "268435456",
}
NO_TUNED_ALLOCATOR_ENV = "METAHEAD_NO_TUNED_ALLOCATOR"  # "1": tuned_allocator_env() adds nothing


# --- precision ----------------------------------------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Without it (e.g. AVX2) oneDNN
    emulates bf16 and a bf16 matmul runs ~70x slower than fp32 (measured on the project's 2-core VM).
    Linux's CPU flags, or torch's own check where /proc/cpuinfo says nothing (other systems)."""
    if {"amx_bf16", "avx512_bf16"} & _cpu_flags():
        return True
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def native_bf16(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """ "none" | "bf16" as given; "auto" → "bf16" where the device computes bf16 natively, else "none"."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r}: choose one of {', '.join(AMP_MODES)}")
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


def autocast_context(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast (weights stay fp32 master copies; convs and matmuls run in bf16) or nothing."""
    device = torch.device(device)
    if resolve_amp(amp, device) == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --- memory format and compilation --------------------------------------------------------------------------


def to_channels_last(module: nn.Module) -> nn.Module:
    """Convert every 4-D parameter and buffer to channels_last in place (convs run 2x faster that way on
    CPU through oneDNN); inputs should be converted too (`channels_last_input`)."""
    return module.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _compile_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:  # pragma: no cover - very old torch
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors) or (RuntimeError,)


def maybe_compile(module: nn.Module, enabled: bool, **options) -> nn.Module:
    """torch.compile `module` in place (same object, same state-dict keys) when `enabled`; if compilation
    fails at the first call (no C++ compiler, an unsupported op, ...) log once and run eager from then on.
    `options` go to torch.compile (e.g. mode="max-autotune", dynamic=False)."""
    if not enabled:
        return module
    module.compile(**options)
    compiled_call = module._compiled_call_impl
    errors = _compile_errors()

    def call_or_fall_back(*args, **kwargs):
        try:
            return compiled_call(*args, **kwargs)
        except errors as err:
            log.warning(
                "torch.compile failed for %s, running it eager: %s", type(module).__name__, str(err)[:500]
            )
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = call_or_fall_back
    return module


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


# --- threads ------------------------------------------------------------------------------------------------


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(intra_op: int | None = None) -> int:
    """Set torch's intra-op threads (None/0: one per available core) and return the number in use. On a
    machine shared with other work, fewer threads than cores can be faster (docs/performance.md)."""
    threads = intra_op or available_cores()
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# --- allocator ----------------------------------------------------------------------------------------------


def find_jemalloc() -> str | None:
    for path in JEMALLOC_CANDIDATES:
        if os.path.exists(path):
            return path
    return None


def tuned_allocator_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables to add for the tuned allocator: glibc's MALLOC_* settings (GLIBC_TUNING;
    those already set are kept). Empty when another allocator is preloaded (LD_PRELOAD of jemalloc or
    tcmalloc: the user's choice) or METAHEAD_NO_TUNED_ALLOCATOR=1."""
    environ = os.environ if environ is None else environ
    if environ.get(NO_TUNED_ALLOCATOR_ENV) == "1":
        return {}
    preload = environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload:
        return {}
    return {k: v for k, v in GLIBC_TUNING.items() if k not in environ}


def tuned_thread_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """OpenMP settings for a machine shared with other work: idle OpenMP threads sleep instead of spinning
    (OMP_WAIT_POLICY=PASSIVE). With 2 threads on 2 busy cores, spinning threads wait for a descheduled
    partner: a tiny training step took 2.9 s spinning vs 0.59 s passive (1 thread: 0.30 s). Read when
    OpenMP starts, so it belongs in a launcher's environment. Nothing is added if already set."""
    environ = os.environ if environ is None else environ
    return {} if "OMP_WAIT_POLICY" in environ else {"OMP_WAIT_POLICY": "PASSIVE"}


def allocator_in_use() -> dict[str, str]:
    """Which malloc this process runs on (from its mapped libraries) and the settings that tune it."""
    name = "glibc"
    try:
        maps = Path("/proc/self/maps").read_text()
        if "libjemalloc" in maps:
            name = "jemalloc"
        elif "libtcmalloc" in maps:
            name = "tcmalloc"
    except OSError:
        name = "unknown"
    info = {"allocator": name}
    for key in ("LD_PRELOAD", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE", *GLIBC_TUNING, "OMP_WAIT_POLICY"):
        if os.environ.get(key):
            info[key] = os.environ[key]
    return info


# --- rendering ----------------------------------------------------------------------------------------------


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every parametrized weight under `module` (spectral norm) by its current value W/σ(W) as eval
    mode computes it, in place (and puts `module` in eval mode): no power iteration and no division per call.
    Inference only.

    Not torch's remove_parametrizations: that deletes the weight property from the parametrized class,
    which a deepcopy shares with its original, so folding a copy would break the original."""
    from torch.nn.utils import parametrize

    module.eval()
    with torch.no_grad():
        for layer in list(module.modules()):
            if not parametrize.is_parametrized(layer):
                continue
            values = {name: getattr(layer, name).detach().clone() for name in layer.parametrizations}
            originals = {name: p.original for name, p in layer.parametrizations.items()}
            layer.__class__ = layer.__class__.__bases__[0]  # the class before parametrization
            del layer._modules["parametrizations"]
            for name, value in values.items():
                layer.register_parameter(
                    name, nn.Parameter(value, requires_grad=originals[name].requires_grad)
                )
    return module


def freeze_resampling_kernels(generator: nn.Module) -> nn.Module:
    """Precompute the stride-2 kernels of G's resampling convs (models.blocks) from the current weights: every
    down block (faster at all resolutions once the kernel is free), and up blocks at or above
    FUSED_RESAMPLING_MIN_SIZE (a transposed conv is slower than upsample + conv at low resolution)."""
    from metahead.models.blocks import FUSED_RESAMPLING_MIN_SIZE

    for block in generator.down.blocks:
        block.freeze_resampling_kernel()
    resolution = generator.cfg.generator_bottleneck_resolution
    for block in generator.up:
        resolution *= 2
        if resolution >= FUSED_RESAMPLING_MIN_SIZE:
            block.freeze_resampling_kernel()
    return generator


class ConstantAdaINGenerator(nn.Module):
    """G with one person's AdaIN parameters ψ held as a constant buffer: forward(landmark_images) → images.
    What an avatar renders with and what `metahead.export` exports."""

    def __init__(self, generator: nn.Module, adain_params: torch.Tensor) -> None:
        super().__init__()
        self.generator = generator
        psi = adain_params.detach().float().reshape(1, -1)
        if psi.shape[1] != generator.num_adain_params:
            raise ValueError(f"adain_params has {psi.shape[1]} values, G needs {generator.num_adain_params}")
        self.register_buffer("adain_params", psi)

    def forward(self, landmark_images: torch.Tensor) -> torch.Tensor:
        return self.generator(landmark_images, adain_params=self.adain_params)


def prepare_generator_for_inference(
    generator: nn.Module,
    adain_params: torch.Tensor | None = None,
    *,
    channels_last: bool = True,
    compile: bool = False,
    copy_first: bool = True,
) -> nn.Module:
    """A render-only G: a copy (unless copy_first=False) in eval mode without gradients, spectral norm
    folded into the weights, the resampling convs' stride-2 kernels computed once, channels_last (default),
    optionally compiled. With `adain_params` (ψ, (1, num_adain_params)) it returns a
    `ConstantAdaINGenerator` taking landmark images only.

    The result is for rendering: its state dict has no spectral-norm keys; save the original (or a folded
    copy) instead. Inputs should be channels_last too (`channels_last_input`); outputs are."""
    prepared = copy.deepcopy(generator) if copy_first else generator
    prepared = fold_spectral_norm(prepared.eval().requires_grad_(False))
    freeze_resampling_kernels(prepared)
    if adain_params is not None:
        device = next(prepared.parameters()).device
        prepared = ConstantAdaINGenerator(prepared, adain_params.to(device)).eval()
    if channels_last:
        to_channels_last(prepared)
    return maybe_compile(prepared, compile)
