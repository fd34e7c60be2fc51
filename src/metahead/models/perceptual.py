"""VGG19 (ImageNet) and VGGFace (VGG16 architecture) feature extractors for the content loss L_CNT, in plain
PyTorch, with loaders for the standard weight files. No weights ship with metahead; see docs/losses.md.

Accepted files (torch.save'd state dicts, optionally wrapped as {"state_dict": ...}, or .safetensors):
- VGG19: torchvision's key layout, `features.N.weight` / `features.N.bias` with N the index in
  torchvision's `vgg19().features` (0, 2, 5, 7, 10, ...). `classifier.*` keys are ignored. Both torchvision's
  own file (vgg19-dcbb9e9d.pth, input "torchvision") and Caffe conversions in the same layout (e.g.
  vgg19-d01eb7cb.pth, input "caffe") have this layout; the key layout cannot tell them apart, so the input
  convention is a separate option.
- VGGFace: the Caffe release's layer names, `conv1_1.weight`, `conv1_1.bias`, ..., `conv5_3.*` (and
  `fc6`..`fc8`, ignored), as written by direct Caffe → PyTorch conversions and by vgg_face_dag.pth;
  torchvision-style `features.N.*` keys (VGG16 numbering) are accepted too.

Only the layers up to the deepest one the loss reads are built and loaded (VGG19 up to relu5_1, VGGFace up to
relu5_1), so the classifier (most of VGG's parameters) is never held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from metahead.fileio import UnreadableFile, read_weights_file

# Torchvision `features` layouts: channel count per conv, "M" per max-pool.
VGG19_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")  # fmt: skip
VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")  # fmt: skip

# Paper: L_CNT reads VGG19 conv1, 6, 11, 20, 29 and VGGFace conv1, 6, 11, 18, 25 -- indices into
# torchvision-style `features`, i.e. the ReLU after conv1_1, conv2_1, conv3_1, conv4_1, conv5_1.
VGG19_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
VGGFACE_LAYERS: tuple[int, ...] = (1, 6, 11, 18, 25)

# Per-channel means in 0..255. Caffe VGG19 (ILSVRC): BGR order. VGG-Face (Caffe release): BGR order.
IMAGENET_MEAN_BGR_255 = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
VGGFACE_MEAN_BGR_255 = (93.5940, 104.7624, 129.1863)

INPUT_STYLES = {
    # name: (channel order, scale applied to [0,1] RGB, mean, std) -- mean/std in the channel order given.
    "caffe": ("bgr", 255.0, None, (1.0, 1.0, 1.0)),
    "torchvision": ("rgb", 1.0, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB),
    "matconvnet": ("rgb", 255.0, None, (1.0, 1.0, 1.0)),
}

_VGGFACE_CAFFE_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                        "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")  # fmt: skip


def _conv_indices(layout: Sequence[int | str]) -> list[int]:
    """Index in `features` of every conv (each conv is followed by a ReLU, each "M" is one pool)."""
    out, i = [], 0
    for item in layout:
        if item == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


class VGGFeatures(nn.Module):
    """A torchvision-numbered VGG `features` stack truncated after the deepest requested layer.

    forward takes images (B, 3, H, W) RGB in [-1, 1], converts them to the input convention of the
    weights (`input_style`), and returns the activations at `layers` (features indices).
    """

    def __init__(
        self, layout: Sequence[int | str], layers: Sequence[int], input_style: str, mean_bgr_255=None
    ):
        super().__init__()
        if input_style not in INPUT_STYLES:
            raise ValueError(
                f"unknown VGG input convention {input_style!r}; choose one of {sorted(INPUT_STYLES)}"
            )
        self.layers = tuple(sorted(layers))
        self.input_style = input_style
        modules: list[nn.Module] = []
        channels = 3
        for item in layout:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
            if len(modules) > self.layers[-1]:
                break
        self.features = nn.Sequential(*modules[: self.layers[-1] + 1])
        order, scale, mean, std = INPUT_STYLES[input_style]
        if mean is None:
            mean = mean_bgr_255 if order == "bgr" else tuple(reversed(mean_bgr_255))
        self.bgr = order == "bgr"
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # frozen: always in eval mode
        return super().train(False)

    def conv_keys(self) -> list[str]:
        return [f"features.{i}.{p}" for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)
                for p in ("weight", "bias")]  # fmt: skip

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) * (self.scale / 2)  # [-1, 1] → [0, scale]
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.preprocess(images)
        out = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.layers:
                out.append(x)
        return out


VGG19_INPUT_STYLES = ("caffe", "torchvision")
VGGFACE_INPUT_STYLES = ("caffe", "matconvnet")


def _check_style(style: str, allowed: Sequence[str], what: str) -> None:
    if style not in allowed:
        raise ValueError(f"{what} input convention must be one of {list(allowed)}, got {style!r}")


def vgg19(input_style: str = "caffe") -> VGGFeatures:
    """VGG19 up to relu5_1 with random weights (load real ones with `load_vgg19`)."""
    _check_style(input_style, VGG19_INPUT_STYLES, "VGG19")
    return VGGFeatures(VGG19_LAYOUT, VGG19_LAYERS, input_style, IMAGENET_MEAN_BGR_255)


def vggface(input_style: str = "caffe") -> VGGFeatures:
    """VGGFace (VGG16) up to relu5_1 with random weights (load real ones with `load_vggface`)."""
    _check_style(input_style, VGGFACE_INPUT_STYLES, "VGGFace")
    return VGGFeatures(VGG16_LAYOUT, VGGFACE_LAYERS, input_style, VGGFACE_MEAN_BGR_255)


def vggface_caffe_key(torchvision_key: str) -> str:
    """`features.N.weight` (VGG16 numbering) → the Caffe layer name, e.g. `conv1_1.weight`."""
    _, index, param = torchvision_key.split(".")
    return f"{_VGGFACE_CAFFE_NAMES[_conv_indices(VGG16_LAYOUT).index(int(index))]}.{param}"


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a .pth/.pt (torch.save, weights only) or .safetensors file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = read_weights_file(path)
    except UnreadableFile as err:
        raise ValueError(f"{path}: cannot read as a {what} state dict: {err}") from None
    except Exception as err:  # noqa: BLE001 -- safetensors' errors: any unreadable file, one clear message
        raise ValueError(f"{path}: cannot read as a {what} state dict ({type(err).__name__}: {err})") from err
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: not a {what} state dict (expected a mapping of parameter names to tensors)"
        )
    return dict(state)


def _load_into(
    net: VGGFeatures, state: Mapping[str, torch.Tensor], path: str, what: str, aliases=None
) -> None:
    wanted = net.conv_keys()
    own = net.state_dict()
    picked: dict[str, torch.Tensor] = {}
    missing = []
    for key in wanted:
        candidates = [key] + ([aliases(key)] if aliases else [])
        found = next((c for c in candidates if c in state), None)
        if found is None:
            missing.append(" or ".join(candidates))
            continue
        if tuple(state[found].shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: {what} key {found!r} has shape {tuple(state[found].shape)}, "
                f"expected {tuple(own[key].shape)}"
            )
        picked[key] = state[found].to(own[key].dtype)
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise ValueError(f"{path}: not a {what} state dict in the expected key layout; missing {shown}")
    net.features.load_state_dict({k.removeprefix("features."): v for k, v in picked.items()})


def load_vgg19(path: str | os.PathLike, input_style: str = "caffe") -> VGGFeatures:
    """VGG19 from a torchvision-layout state dict (`features.N.*`)."""
    net = vgg19(input_style)
    _load_into(net, read_state_dict(path, "VGG19"), os.fspath(path), "VGG19")
    return net


def load_vggface(path: str | os.PathLike, input_style: str = "caffe") -> VGGFeatures:
    """VGGFace from a Caffe-named (`conv1_1.*`) or torchvision-layout (`features.N.*`) state dict."""
    net = vggface(input_style)
    _load_into(net, read_state_dict(path, "VGGFace"), os.fspath(path), "VGGFace", aliases=vggface_caffe_key)
    return net


def vggface_state_dict_caffe_names(net: VGGFeatures) -> dict[str, torch.Tensor]:
    """`net`'s weights under the Caffe layer names (the layout `load_vggface` reads; tests write files so)."""
    return {vggface_caffe_key(k): v for k, v in net.state_dict().items()}
