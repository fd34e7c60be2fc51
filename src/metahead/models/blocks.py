"""Building blocks shared by E, G and D: spectrally normalised layers, AdaIN, self-attention, residual blocks.

Every network in the paper is assembled from these; nothing here is specific to one network.
Ops are chosen to run well on CPU under bf16 autocast and channels_last (docs/performance.md has the
measurements): instance norm and AdaIN as one multiply-add over the activation with float32 statistics; a
3x3 conv followed by 2x2 average pooling, and a 3x3 conv on a nearest-upsampled input, each as one stride-2
4x4 (transposed) conv at high resolutions (the same function with 4/9 of the multiply-adds); on CPU,
self-attention's three 1x1 convs as one matmul and the attention through whichever kernel is faster for its
width; no Python loops over the batch. `use_reference_ops(module)` switches a network back to the plain
formulation (F.instance_norm, conv then F.avg_pool2d, F.interpolate then conv,
F.scaled_dot_product_attention): the tests compare the two, the benchmarks time them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from metahead.config import ModelConfig

NORMS = ("none", "instance", "adain")
RESAMPLES = ("none", "down", "up")
UPSAMPLINGS = ("nearest", "bilinear")  # model.generator_upsampling


# --- layers -------------------------------------------------------------------------------------------


def init_weight(weight: torch.Tensor, kind: str) -> None:
    """Initialise a conv/linear weight in place: "orthogonal" (BigGAN) or "xavier" (uniform)."""
    if kind == "orthogonal":
        nn.init.orthogonal_(weight)
    elif kind == "xavier":
        nn.init.xavier_uniform_(weight)
    else:
        raise ValueError(f"unknown weight_init {kind!r}; choose 'orthogonal' or 'xavier'")


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a conv/linear in spectral norm (paper: every conv and linear layer)."""
    return _spectral_norm(module) if enabled else module


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    spectral_norm: bool = True,
    weight_init: str = "orthogonal",
    bias: bool = True,
) -> nn.Module:
    """A same-padding conv, initialised, then spectrally normalised (init first: SN's power iteration
    starts from the initialised weight)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    init_weight(conv.weight, weight_init)
    if bias:
        nn.init.zeros_(conv.bias)
    return maybe_spectral_norm(conv, spectral_norm)


def linear(
    in_features: int,
    out_features: int,
    *,
    spectral_norm: bool = True,
    weight_init: str = "orthogonal",
    bias: bool = True,
) -> nn.Module:
    layer = nn.Linear(in_features, out_features, bias=bias)
    init_weight(layer.weight, weight_init)
    if bias:
        nn.init.zeros_(layer.bias)
    return maybe_spectral_norm(layer, spectral_norm)


# --- resampling convolutions as one stride-2 conv ---------------------------------------------------------
#
# avg_pool2d(conv3x3(x), 2) is a 4x4 conv with stride 2 and padding 1 whose kernel is the 3x3 kernel summed
# over the four 2x2 shifts, divided by 4; conv3x3(nearest_upsample(x)) is a 4x4 transposed conv with stride 2
# and padding 1 on the low-resolution x with the same box-summed kernel (flipped, in/out swapped). Same
# function up to float rounding, 16 instead of 36 multiply-adds per low-resolution pixel, and no
# full-resolution intermediate in forward or backward. Building the kernel costs ~16 reads per weight, so it
# pays only at high resolutions: at or above this image side (of the full-resolution side of the pair), and
# with channels_last activations.
FUSED_RESAMPLING_MIN_SIZE = 64


def box_summed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) → (O, I, 4, 4): the sum of the 3x3 kernel placed at the four 2x2 offsets."""
    rows = F.pad(weight, (0, 0, 0, 1)) + F.pad(weight, (0, 0, 1, 0))
    return F.pad(rows, (0, 1)) + F.pad(rows, (1, 0))


def conv3x3_avg_pool(conv: nn.Module, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """avg_pool2d(conv(x), 2) for a 3x3, padding-1 conv, as one stride-2 conv (`kernel`: precomputed
    `downsampling_kernel(conv.weight)`)."""
    kernel = downsampling_kernel(conv.weight) if kernel is None else kernel
    return F.conv2d(x, kernel, conv.bias, stride=2, padding=1)


def upsample_conv3x3(conv: nn.Module, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """conv(nearest ×2 upsampling of x) for a 3x3, padding-1 conv, as one stride-2 transposed conv
    (`kernel`: precomputed `upsampling_kernel(conv.weight)`)."""
    kernel = upsampling_kernel(conv.weight) if kernel is None else kernel
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)


def downsampling_kernel(weight: torch.Tensor) -> torch.Tensor:
    return box_summed_kernel(weight) * 0.25


def upsampling_kernel(weight: torch.Tensor) -> torch.Tensor:
    # conv_transpose2d takes (in, out, kh, kw) and applies the kernel flipped.
    return box_summed_kernel(weight.flip(2, 3)).transpose(0, 1)


def is_spectrally_normalised(module: nn.Module) -> bool:
    """True when `module`'s weight is computed by a spectral-norm parametrization."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is None or "weight" not in parametrizations:
        return False
    return any(type(p).__name__ == "_SpectralNorm" for p in parametrizations["weight"])


def instance_norm_affine(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Instance norm of x (B, C, H, W), then `· scale + shift` ((B or 1, C) each), as one multiply-add over
    x: x·g + (shift − mean·g) with g = scale / sqrt(var + eps). The statistics and g are float32; the
    activation keeps its dtype and memory format (one pass instead of F.instance_norm's normalise, then a
    multiply and an add). Two-pass statistics: torch.var_mean's single-pass kernel is 3-7x slower here
    (docs/performance.md)."""
    mean = x.mean(dim=(2, 3), keepdim=True, dtype=torch.float32)
    var = (x - mean).square().mean(dim=(2, 3), keepdim=True)
    gain = scale.float()[:, :, None, None] * torch.rsqrt(var + eps)
    offset = shift.float()[:, :, None, None] - mean * gain
    return torch.addcmul(offset.to(x.dtype), x, gain.to(x.dtype))


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d(affine=True) (same parameters, same state-dict keys) computed by
    `instance_norm_affine`."""

    reference_ops = False

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference_ops:
            return super().forward(x)
        return instance_norm_affine(x, self.weight[None], self.bias[None], self.eps)


class AdaIN(nn.Module):
    """Adaptive instance norm: instance-normalise, then scale and shift by this layer's slice of ψ.

    The generator gives every AdaIN layer a disjoint slice [offset, offset + 2C) of ψ̂
    (`assign_adain_slices`); the layer reads its scale (first C) and bias (next C) from the full
    parameter vector it is given.
    """

    reference_ops = False

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.offset: int | None = None

    @property
    def num_params(self) -> int:
        return 2 * self.channels

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor) -> torch.Tensor:
        if self.offset is None:
            raise RuntimeError("AdaIN layer has no slice of ψ assigned (call assign_adain_slices)")
        own = adain_params[:, self.offset : self.offset + self.num_params]
        scale, bias = own[:, : self.channels], own[:, self.channels :]
        if self.reference_ops:
            return F.instance_norm(x, eps=self.eps) * scale[:, :, None, None] + bias[:, :, None, None]
        return instance_norm_affine(x, scale, bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, offset={self.offset}"


def assign_adain_slices(module: nn.Module) -> int:
    """Give every AdaIN layer under `module` its own consecutive slice of ψ; returns len(ψ)."""
    total = 0
    for layer in module.modules():
        if isinstance(layer, AdaIN):
            layer.offset = total
            total += layer.num_params
    return total


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "adain":
        return AdaIN(channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def _apply_norm(norm: nn.Module, x: torch.Tensor, adain_params: torch.Tensor | None) -> torch.Tensor:
    if isinstance(norm, AdaIN):
        if adain_params is None:
            raise ValueError("this block uses AdaIN: pass adain_params")
        return norm(x, adain_params)
    return norm(x)


# On CPU, attention over at most this many value channels runs through the fused (flash) kernel with q and k
# zero-padded to v's width (it needs equal widths); wider values go through two matmuls and a softmax.
# Measured, 1 thread, padded flash / matmuls / F.scaled_dot_product_attention (its math fallback), ms:
#   forward, 4096 tokens, q/k 4, v 32:     41 / 83 / 110;    1024 tokens x 8, q/k 8, v 64:   48 / 47 / 78
#   fwd+bwd, 4096 tokens, q/k 4, v 32:    164 / 210 / 255;   1024 tokens x 8, q/k 8, v 64:  211 / 143 / 148
#   fwd+bwd, 1024 tokens x 8, q/k 32, v 256: 426 / 231 / 258
# so the flash kernel up to 64 channels when no gradient is needed, up to 32 when one is.
FLASH_ATTENTION_MAX_CHANNELS = 64
FLASH_ATTENTION_MAX_CHANNELS_TRAINING = 32


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + γ · softmax(q kᵀ) v with 1x1 convs q, k (C/8 channels) and v (C).

    γ starts at 0, so the block starts as the identity (SAGAN). Logits are scaled by 1/sqrt(C/8), as
    F.scaled_dot_product_attention does (SAGAN does not; harmless, and it keeps logits tame at 256²).
    On CPU the three 1x1 convs run as one matmul over the pixels (a view of channels_last activations) and
    the attention as described at FLASH_ATTENTION_MAX_CHANNELS; elsewhere (CUDA) and with reference ops,
    F.scaled_dot_product_attention picks its kernel.
    """

    reference_ops = False

    def __init__(self, channels: int, *, spectral_norm: bool = True, weight_init: str = "orthogonal") -> None:
        super().__init__()
        key_channels = max(1, channels // 8)
        kw = dict(spectral_norm=spectral_norm, weight_init=weight_init)
        self.query = conv2d(channels, key_channels, 1, **kw)
        self.key = conv2d(channels, key_channels, 1, **kw)
        self.value = conv2d(channels, channels, 1, **kw)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.reference_ops or x.device.type != "cpu":
            attended = self._attend_sdpa(x)
        else:
            attended = self._attend_cpu(x)
        return x + self.gamma.to(attended.dtype) * attended

    def _attend_sdpa(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C', H, W) -> (B, 1, HW, C')
            return t.flatten(2).transpose(1, 2).unsqueeze(1)

        attended = F.scaled_dot_product_attention(
            tokens(self.query(x)), tokens(self.key(x)), tokens(self.value(x))
        )
        return attended.squeeze(1).transpose(1, 2).reshape(b, c, h, w)

    def _attend_cpu(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        key_channels = self.query.out_channels
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view when x is channels_last
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight]).flatten(1)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        query, key, value = F.linear(pixels, weight, bias).split([key_channels, key_channels, c], dim=-1)
        scale = key_channels**-0.5
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if c <= (FLASH_ATTENTION_MAX_CHANNELS_TRAINING if training else FLASH_ATTENTION_MAX_CHANNELS):
            pad = (0, c - key_channels)
            attended = F.scaled_dot_product_attention(
                F.pad(query, pad)[:, None], F.pad(key, pad)[:, None], value[:, None], scale=scale
            )[:, 0]
        else:
            attention = torch.softmax(torch.matmul(query * scale, key.transpose(1, 2)), dim=-1)
            attended = torch.matmul(attention.to(value.dtype), value)
        return attended.view(b, h, w, c).permute(0, 3, 1, 2)  # channels_last (B, C, H, W)


class ResidualBlock(nn.Module):
    """BigGAN-style pre-activation residual block:
    [norm, ReLU] → (up) → conv3 → norm → ReLU → conv3 → (down), plus a skip path (1x1 conv where channels
    or resolution change, identity otherwise).

    resample: "down" (average pooling, E/D/G's encoder), "up" (G's decoder: `upsampling` "nearest", the
    lab code's, or "bilinear"), "none" (bottleneck, D's extra 4x4 block). norm: "none" (E, D), "instance"
    (G's encoder), "adain" (G's bottleneck and decoder).
    preactivation=False drops the first norm+ReLU (the block that reads an image: ReLU would cut its
    negative half).
    """

    reference_ops = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        resample: str = "none",
        norm: str = "none",
        preactivation: bool = True,
        upsampling: str = "nearest",
        spectral_norm: bool = True,
        weight_init: str = "orthogonal",
    ) -> None:
        super().__init__()
        if resample not in RESAMPLES:
            raise ValueError(f"unknown resample {resample!r}; choose one of {RESAMPLES}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"model.generator_upsampling={upsampling!r}: choose one of {UPSAMPLINGS}")
        self.resample = resample
        self.upsampling = upsampling
        self.preactivation = preactivation
        kw = dict(spectral_norm=spectral_norm, weight_init=weight_init)
        self.norm1 = make_norm(norm, in_channels) if preactivation else nn.Identity()
        self.conv1 = conv2d(in_channels, out_channels, 3, **kw)
        self.norm2 = make_norm(norm, out_channels)
        self.conv2 = conv2d(out_channels, out_channels, 3, **kw)
        needs_skip_conv = in_channels != out_channels or resample != "none"
        self.skip = conv2d(in_channels, out_channels, 1, **kw) if needs_skip_conv else nn.Identity()
        # The stride-2 kernel of the resampling conv, fixed once for inference (`freeze_resampling_kernel`);
        # not saved: it is a function of the conv's weight.
        self.register_buffer("resampling_kernel", None, persistent=False)

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        if self.preactivation:
            h = F.relu(_apply_norm(self.norm1, h, adain_params))
        if self.resample == "up":
            if self._fuse_resampling(h, 2 * h.shape[-1]):
                h = upsample_conv3x3(self.conv1, h, self.resampling_kernel)
            else:
                h = self.conv1(_upsample(h, self.upsampling))
        else:
            h = self.conv1(h)
        h = F.relu(_apply_norm(self.norm2, h, adain_params))
        # A 1x1 conv commutes with upsampling and average pooling: run it at the lower resolution.
        if self.resample == "down":
            if self._fuse_resampling(h, h.shape[-1]):
                h = conv3x3_avg_pool(self.conv2, h, self.resampling_kernel)
            else:
                h = F.avg_pool2d(self.conv2(h), 2)
            return h + self.skip(F.avg_pool2d(x, 2))
        h = self.conv2(h)
        if self.resample == "up":
            return h + _upsample(self.skip(x), self.upsampling)
        return h + self.skip(x)

    def _fuse_resampling(self, x: torch.Tensor, full_resolution: int) -> bool:
        # Only for channels_last activations: in NCHW, oneDNN's stride-2 and transposed convs lose what the
        # fusion saves (measured: cpu-64 G 8% slower in NCHW, 2.7x faster with the other ops in NHWC).
        if self.reference_ops or not x.is_contiguous(memory_format=torch.channels_last):
            return False
        if self.resample == "up" and self.upsampling != "nearest":
            return False  # the fused kernel is nearest upsampling's
        return self.resampling_kernel is not None or full_resolution >= FUSED_RESAMPLING_MIN_SIZE

    @torch.no_grad()
    def freeze_resampling_kernel(self) -> None:
        """Compute the stride-2 kernel of the resampling conv once, from the conv's current weight (for a
        render-only copy whose weights no longer change; spectral norm folded in first)."""
        if self.resample == "down":
            self.resampling_kernel = downsampling_kernel(self.conv2.weight).detach().clone()
        elif self.resample == "up" and self.upsampling == "nearest":
            self.resampling_kernel = upsampling_kernel(self.conv1.weight).detach().clone()


def _upsample(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False)


def use_reference_ops(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every block under `module` to (or back from) the plain formulation of its ops: F.instance_norm
    then scale and shift; conv then F.avg_pool2d; F.interpolate then conv; attention on unpadded q, k. Same
    function; for tests (the fast ops must match) and benchmarks (before/after)."""
    for layer in module.modules():
        if isinstance(layer, AdaIN | InstanceNorm | SelfAttention | ResidualBlock):
            layer.reference_ops = enabled
    return module


# --- channel schedule and the shared down path -----------------------------------------------------------


def channels_at(cfg: ModelConfig, resolution: int) -> int:
    """Feature channels at a resolution: base at image_size/2, doubling per halving, capped at max
    (paper-256: 64 @128², 128 @64², 256 @32², 512 @16² and below)."""
    return min(cfg.max_channels, cfg.base_channels * max(1, cfg.image_size // (2 * resolution)))


def halvings(start: int, stop: int, what: str) -> list[int]:
    """Resolutions visited when halving from `start` down to `stop` (exclusive of start)."""
    if stop < 1 or start % stop or (start // stop) & (start // stop - 1):
        raise ValueError(f"{what}: {start} cannot be halved down to {stop} (need start/stop a power of two)")
    out, r = [], start
    while r > stop:
        r //= 2
        out.append(r)
    return out


class DownPath(nn.Module):
    """Residual downsampling blocks from image_size to `final_resolution`, self-attention after the block
    that reaches `attention_resolution`. Used by E, by D's V and (with instance norm) by G's encoder.

    forward returns the activation after every stage (block, plus attention where present): D's feature
    matching uses them all, E and G use the last.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        in_channels: int,
        final_resolution: int,
        *,
        norm: str,
        final_channels: int | None = None,
        what: str = "down path",
    ) -> None:
        super().__init__()
        resolutions = halvings(cfg.image_size, final_resolution, what)
        if not resolutions:
            raise ValueError(
                f"{what}: final resolution {final_resolution} must be below image_size {cfg.image_size}"
            )
        check_attention_resolution(
            cfg.attention_down_resolution, resolutions, f"{what} attention_down_resolution"
        )
        kw = dict(spectral_norm=cfg.spectral_norm, weight_init=cfg.weight_init)
        self.resolutions = resolutions
        self.widths: list[int] = []  # the channels of each stage's output
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        channels = in_channels
        for i, res in enumerate(resolutions):
            out = channels_at(cfg, res)
            if i == len(resolutions) - 1 and final_channels is not None:
                out = final_channels
            self.blocks.append(
                ResidualBlock(channels, out, resample="down", norm=norm, preactivation=i > 0, **kw)
            )
            if res == cfg.attention_down_resolution:
                self.attention[str(i)] = SelfAttention(out, **kw)
            self.widths.append(out)
            channels = out
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.attention:
                x = self.attention[str(i)](x)
            features.append(x)
        return features


def check_attention_resolution(resolution: int, resolutions: Iterable[int], what: str) -> None:
    """0 disables attention; any other value must be a resolution the path visits."""
    resolutions = list(resolutions)
    if resolution and resolution not in resolutions:
        raise ValueError(f"{what}={resolution} is not on the path {resolutions} (0 disables attention)")


def sum_pool(x: torch.Tensor) -> torch.Tensor:
    """ReLU then global sum pooling (paper; lab code order)."""
    return F.relu(x).sum(dim=(2, 3))
