"""Inception-v3 as the FID implementations use it (TensorFlow's 2015-12-05 graph), in plain PyTorch.

Loads the standard port of those weights, ``pt_inception-2015-12-05-6726825d.pth`` (the file pytorch-fid
uses), from a path given explicitly or in the environment variable METAHEAD_INCEPTION_WEIGHTS; nothing
is downloaded. The module and parameter names follow that file's layout (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ...), so it loads without renaming.

The network differs from the ImageNet-classification Inception-v3 where TensorFlow's graph did:
- the average-pool branches of the A, C and first E blocks ignore the zero padding in their average
  (TensorFlow's SAME pooling), and
- the last E block (Mixed_7c) pools its pool branch with a 3x3 max, not an average.
Batch norms use eps 1e-3 and run in inference mode. Features are the 2048-d global average pool of
Mixed_7c. Input: images resized to 299x299 (bilinear, half-pixel centres, no antialiasing) and scaled to
[-1, 1]; our images already are in [-1, 1] (see `FIDInception.preprocess`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metahead.fileio import UnreadableFile, read_weights_file

INCEPTION_WEIGHTS_ENV = "METAHEAD_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048


class InceptionWeightsMissing(FileNotFoundError):
    """FID was asked for but the Inception weight file is not configured or not there."""


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: Inception's basic unit."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _same_average_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, does not count the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _same_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 (Mixed_5b..5d); out 224 + pool_features."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_same_average_pool(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): stride-2 3x3 | 1x1-3x3-3x3/2 | 3x3/2 max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e); out 768."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_same_average_pool(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b, Mixed_7c); out 2048. `pool` is "average"
    for Mixed_7b and "max" for Mixed_7c, as in the TensorFlow graph FID was defined with."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("average", "max"):
            raise ValueError(f"pool must be 'average' or 'max', got {pool!r}")
        self.pool = _same_average_pool if pool == "average" else _same_max_pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(three),
                self.branch3x3_2b(three),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(self.pool(x)),
            ],
            dim=1,
        )


class FIDInception(nn.Module):
    """Inception-v3 up to the 2048-d average pool, with FID's preprocessing. forward(images (B, 3, H, W)
    in [-1, 1]) -> (B, 2048). Always in eval mode; no gradients needed for FID."""

    def __init__(self, quantize: bool = True) -> None:
        super().__init__()
        # quantize: round inputs to 8 bits first, as FID tools see images read back from PNG files.
        self.quantize = quantize
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="average")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FIDInception:
        return super().train(False)  # batch-norm statistics are the file's, never batch statistics

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, 299, 299) in [-1, 1], as pytorch-fid prepares [0, 1] images."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        unit = ((images.float() + 1) / 2).clamp(0, 1)
        if self.quantize:
            unit = torch.round(unit * 255) / 255
        unit = F.interpolate(unit, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return unit * 2 - 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images).to(self.Conv2d_1a_3x3.conv.weight.dtype)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))


def _weight_keys(model: nn.Module) -> dict[str, torch.Size]:
    """The parameters and buffers a weight file must provide (num_batches_tracked is bookkeeping)."""
    return {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


# Present in the file (the 1008-class classifier, an auxiliary head, batch counters) but unused for FID.
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")


def load_inception_state_dict(model: FIDInception, state_dict: dict, source: str = "state dict") -> None:
    """Copy an Inception state dict in the pt_inception layout into `model`, checking every key and shape."""
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(f"{source}: not an Inception state dict (expected a mapping of names to tensors)")
    expected = _weight_keys(model)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(
        k
        for k in set(state_dict) - set(expected)
        if not k.startswith(_IGNORED_PREFIXES) and not k.endswith("num_batches_tracked")
    )
    wrong_shape = [
        f"{k}: {tuple(state_dict[k].shape)} in file, {tuple(shape)} expected"
        for k, shape in expected.items()
        if k in state_dict and state_dict[k].shape != shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches (first: {'; '.join(wrong_shape[:3])})")
    if problems:
        raise ValueError(
            f"{source}: not the FID Inception weights ({INCEPTION_WEIGHTS_FILE} layout): "
            + "; ".join(problems)
        )
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in expected:
                tensor.copy_(state_dict[name].to(tensor.dtype))


def inception_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The weight file: `path`, else $METAHEAD_INCEPTION_WEIGHTS; a clear error when neither names a file."""
    chosen = path if path else os.environ.get(INCEPTION_WEIGHTS_ENV)
    if not chosen:
        raise InceptionWeightsMissing(
            f"FID needs the Inception weights {INCEPTION_WEIGHTS_FILE} (the file pytorch-fid uses); give its "
            f"path (--inception-weights, or the environment variable {INCEPTION_WEIGHTS_ENV}). Without it, "
            "use the metric 'identity_fd' (a Fréchet distance on face-identity descriptors, not FID)."
        )
    chosen = Path(chosen).expanduser()
    if not chosen.is_file():
        raise InceptionWeightsMissing(
            f"{chosen}: Inception weight file not found (expected {INCEPTION_WEIGHTS_FILE})"
        )
    return chosen


def load_fid_inception(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", quantize: bool = True
) -> FIDInception:
    """FIDInception with weights from `path` or $METAHEAD_INCEPTION_WEIGHTS."""
    weights = inception_weights_path(path)
    try:
        state_dict = read_weights_file(weights)
    except UnreadableFile as error:
        raise ValueError(f"{weights}: cannot read as a PyTorch weight file: {error}") from None
    model = FIDInception(quantize=quantize)
    load_inception_state_dict(model, state_dict, source=str(weights))
    return model.to(device)


@torch.no_grad()
def inception_features(model: FIDInception, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(B, 2048) pool features of images (B, 3, H, W) in [-1, 1], computed in batches."""
    device = next(model.parameters()).device
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)]
    )
