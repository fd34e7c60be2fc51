"""dlib's 128-D face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The weights are read straight from dlib's own serialisation (no dlib import needed), checked
against the network definition of dlib's ``face_recognition_model_v1`` (29 conv layers, input
150x150 RGB face chips), and loaded into :class:`FaceIdentityNet`. Descriptors match
``dlib.face_recognition_model_v1.compute_face_descriptor`` (see docs/face-identity.md).

dlib's format (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h), as parsed here:

- integers: one control byte (low 4 bits = number of following bytes, bit 7 = negative for signed
  types), then that many little-endian magnitude bytes;
- floats: two integers, mantissa (int64) then exponent (int16), value = mantissa * 2**exponent
  (exponent 32000/32001/32002 = +inf/-inf/nan);
- bools: the ASCII byte '1' or '0'; strings: an integer length then the bytes;
- tensors: integer version (2: raw little-endian float32 data; 1: each value as a dlib float),
  then num_samples, k, nr, nc; alias tensors: version 1 then the four sizes;
- a network nests from the loss outwards: ``add_loss_layer`` writes its version, the loss details,
  then the sub-network; ``add_layer`` writes its version, its whole sub-network, then its layer's
  details and bookkeeping (3 bools, 3 tensors); tag and skip layers write version 1 and their
  sub-network; the innermost layer holds the input layer. Layer details start with a name string
  (``con_4``, ``affine_2``, ``bn_con2``, ``relu_2``, ``max_pool_2``, ``add_prev_``, ``fc_2``, ...).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metahead.landmarks.detect import face_recognition_model_path
from metahead.models.face_align import align_face_chips

DLIB_FACE_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128

# Residual stages, input side first (dlib's alevel4 .. alevel0): (channels, blocks, whether the
# first block halves the size).
_STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


class DlibModelError(ValueError):
    """A dlib model file that is missing, truncated or not the expected network."""


def default_dlib_model_path(name: str = DLIB_FACE_RECOGNITION_MODEL) -> Path:
    """A model file of the face-recognition-models package (default: dlib's face network)."""
    return face_recognition_model_path(name)


# ----------------------------------------------------------------------------------------------
# dlib serialisation reader


class _DlibReader:
    """Cursor over the bytes of a dlib-serialised object."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def error(self, message: str) -> DlibModelError:
        return DlibModelError(f"{self.source}: {message} (at byte {self.pos})")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"file ends early: wanted {n} more bytes")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self, signed: bool = True) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or (not signed and control & 0x80) or control & 0x70:
            raise self.error(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if signed and control & 0x80 else value

    def read_float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.error("old ASCII float encoding is not supported")
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def read_bool(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise self.error(f"bad bool byte {byte!r}")
        return byte == b"1"

    def read_string(self) -> str:
        n = self.read_int(signed=False)
        return self._take(n).decode("latin-1")

    def peek_name(self) -> str | None:
        """The layer name string that starts here, or None if the next item is not one."""
        start = self.pos
        try:
            n = self.read_int(signed=False)
            if not 1 <= n <= 64 or self.pos + n > len(self.data):
                return None
            chunk = self.data[self.pos : self.pos + n]
            if not all(
                ch == 0x5F or 0x30 <= ch <= 0x39 or 0x41 <= ch <= 0x5A or 0x61 <= ch <= 0x7A for ch in chunk
            ):
                return None
            return chunk.decode("ascii")
        except DlibModelError:
            return None
        finally:
            self.pos = start

    def read_tensor(self) -> np.ndarray:
        version = self.read_int()
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:
            values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.read_float() for _ in range(count)], dtype=np.float32)
        else:
            raise self.error(f"unknown tensor version {version}")
        return values.reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise self.error(f"unknown alias_tensor version {version}")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One layer of a dlib network as stored in the file (input side first)."""

    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, fc, tag_or_skip
    name: str = ""  # the serialised version string, e.g. "con_4"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, float | int | bool | tuple] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    loss: str
    loss_options: dict[str, float]
    layers: list[DlibLayer]  # input layer first, output layer last


def _read_layer_details(reader: _DlibReader) -> DlibLayer:
    name = reader.read_string()
    if name.startswith("con_"):
        if name not in ("con_4", "con_5", "con_6"):
            raise reader.error(f"unsupported conv layer version {name!r}")
        params = reader.read_tensor().reshape(-1)
        num_filters = reader.read_int()
        kernel = (reader.read_int(), reader.read_int())
        stride = (reader.read_int(), reader.read_int())
        padding = (reader.read_int(), reader.read_int())
        filters = reader.read_alias_tensor()
        reader.read_alias_tensor()  # biases: the tail of params
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.read_float()
        use_bias = reader.read_bool() if name in ("con_5", "con_6") else True
        if name == "con_6" and reader.read_bool():
            raise reader.error("conv layer with fused relu is not supported")
        n_weights = int(np.prod(filters))
        if filters[0] != num_filters or params.size != n_weights + (num_filters if use_bias else 0):
            raise reader.error(f"conv parameter size {params.size} does not match filters {filters}")
        arrays = {"weight": params[:n_weights].reshape(filters)}
        if use_bias:
            arrays["bias"] = params[n_weights:]
        return DlibLayer("con", name, arrays, {"kernel": kernel, "stride": stride, "padding": padding})
    if name in ("affine_", "affine_2"):
        params = reader.read_tensor().reshape(-1)
        gamma = reader.read_alias_tensor()
        reader.read_alias_tensor()
        mode = reader.read_int()
        disabled = reader.read_bool() if name == "affine_2" else False
        n = int(np.prod(gamma))
        return DlibLayer(
            "affine",
            name,
            {"scale": params[:n], "shift": params[n : 2 * n]},
            {"conv_mode": mode == 0, "disabled": disabled},
        )
    if name == "bn_con2":
        # dlib turns a stored batch norm into a fixed affine layer when loading into affine_.
        params = reader.read_tensor().reshape(-1)
        gamma = reader.read_alias_tensor()
        reader.read_alias_tensor()
        for _ in range(2):  # batch means / inverse stds of the last training step
            reader.read_tensor()
        running_mean = reader.read_tensor().reshape(-1)
        running_var = reader.read_tensor().reshape(-1)
        reader.read_int(signed=False)
        reader.read_int(signed=False)
        for _ in range(4):
            reader.read_float()
        eps = reader.read_float()
        n = int(np.prod(gamma))
        scale = params[:n] / np.sqrt(running_var + np.float32(eps))
        shift = params[n : 2 * n] - scale * running_mean
        return DlibLayer("affine", name, {"scale": scale, "shift": shift}, {"conv_mode": True})
    if name in ("relu_", "relu_2"):
        disabled = reader.read_bool() if name == "relu_2" else False
        return DlibLayer("relu", name, options={"disabled": disabled})
    if name in ("max_pool_2", "avg_pool_2"):
        kernel = (reader.read_int(), reader.read_int())
        stride = (reader.read_int(), reader.read_int())
        padding = (reader.read_int(), reader.read_int())
        return DlibLayer(name[:-2], name, options={"kernel": kernel, "stride": stride, "padding": padding})
    if name == "add_prev_":
        return DlibLayer("add_prev", name)
    if name in ("fc_2", "fc_3"):
        num_outputs = reader.read_int(signed=False)
        num_inputs = reader.read_int(signed=False)
        params = reader.read_tensor().reshape(-1)
        reader.read_alias_tensor()
        reader.read_alias_tensor()
        has_bias = reader.read_int() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        for _ in range(4):
            reader.read_float()
        use_bias = reader.read_bool() if name == "fc_3" else True
        n = num_inputs * num_outputs
        arrays = {"weight": params[:n].reshape(num_inputs, num_outputs)}
        if has_bias and use_bias:
            arrays["bias"] = params[n : n + num_outputs]
        return DlibLayer("fc", name, arrays, {"num_outputs": num_outputs, "num_inputs": num_inputs})
    raise reader.error(f"unsupported layer type {name!r}")


def _read_input_layer(reader: _DlibReader) -> DlibLayer:
    name = reader.read_string()
    if name not in ("input_rgb_image", "input_rgb_image_sized"):
        raise reader.error(f"unsupported input layer {name!r}")
    mean = np.array([reader.read_float() for _ in range(3)], dtype=np.float32)
    options: dict = {}
    if name == "input_rgb_image_sized":
        options["size"] = (reader.read_int(signed=False), reader.read_int(signed=False))
    return DlibLayer("input", name, {"mean": mean}, options)


def read_dlib_network(path: str | os.PathLike) -> DlibNetwork:
    """Parse a dlib DNN file into its loss and the flat list of layers (input first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dlib model file not found")
    reader = _DlibReader(path.read_bytes(), str(path))
    if reader.read_int() != 1:
        raise reader.error("not a dlib network file (no add_loss_layer version 1 at the start)")
    loss = reader.read_string()
    if loss == "loss_metric_2":
        loss_options = {"margin": reader.read_float(), "distance_threshold": reader.read_float()}
    elif loss == "loss_metric_":
        loss_options = {}
    else:
        raise reader.error(
            f"loss {loss!r} is not dlib's metric loss, so this is not a face-descriptor network"
        )

    # Versions of the nested wrappers, outermost first, down to the one holding the input layer.
    versions = [reader.read_int()]
    while reader.peek_name() is None:
        versions.append(reader.read_int())
        if len(versions) > 10000:
            raise reader.error("no input layer found")
    layers = [_read_input_layer(reader)]

    innermost = versions.pop()
    if reader.peek_name() is not None:  # add_layer directly on the input layer
        layers.append(_read_layer_details(reader))
        _skip_add_layer_state(reader)
        reader.read_tensor()  # grad_final
        if innermost >= 3:
            reader.read_int(signed=False)  # sample expansion factor
    else:  # a tag layer directly on the input layer
        reader.read_tensor()
        reader.read_tensor()
        reader.read_bool()
        if innermost >= 2:
            reader.read_int(signed=False)
        layers.append(DlibLayer("tag_or_skip"))

    for version in reversed(versions):
        if version == 2:
            layers.append(_read_layer_details(reader))
            _skip_add_layer_state(reader)
            reader.read_tensor()  # params_grad
        elif version == 1:
            layers.append(DlibLayer("tag_or_skip"))
        else:
            raise reader.error(f"unexpected layer wrapper version {version}")
    if reader.pos != len(reader.data):
        raise reader.error(f"{len(reader.data) - reader.pos} unread bytes after the network")
    return DlibNetwork(loss, loss_options, layers)


def _skip_add_layer_state(reader: _DlibReader) -> None:
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output/gradient disabled
        reader.read_bool()
    reader.read_tensor()  # x_grad
    reader.read_tensor()  # cached_output


# ----------------------------------------------------------------------------------------------
# The network


class ChannelAffine(nn.Module):
    """dlib's affine layer: a batch norm frozen into a per-channel scale and shift."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift[:, None, None], x, self.scale[:, None, None])


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Conv2d:
    # dlib pads stride-1 convs by kernel//2 and strided convs not at all.
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of different sizes add as if the smaller were zero-padded at the end
    (channels, bottom rows, right columns)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(x' + conv-affine-relu-conv-affine(x)), where x' is x,
    or for the downsampling block a 2x2 average pool of x (zero-padded to the block's channels)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = _conv(in_channels, out_channels, 3, 2 if downsample else 1)
        self.affine1 = ChannelAffine(out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3, 1)
        self.affine2 = ChannelAffine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(_add_zero_padded(branch, shortcut))


class FaceIdentityNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1: 150x150 RGB chip (0..255) -> 128-D descriptor.

    Stem conv 7x7/2 (32) + affine + relu + max-pool 3x3/2, then residual stages of 32, 64, 128,
    256, 256 channels (3, 4, 3, 3, 1 blocks; all but the first stage start by halving the size),
    global average pool and a 128-way linear layer without bias.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor([122.782, 117.001, 104.298]))
        self.stem_conv = _conv(3, 32, 7, 2)
        self.stem_affine = ChannelAffine(32)
        stages = []
        in_channels = 32
        for channels, num_blocks, downsample in _STAGES:
            blocks = [ResidualBlock(in_channels, channels, downsample)]
            blocks += [ResidualBlock(channels, channels, False) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.descriptor = nn.Linear(in_channels, DESCRIPTOR_DIM, bias=False)

    def _check_chips(self, chips: torch.Tensor) -> None:
        if chips.dim() != 4 or chips.shape[1] != 3:
            raise ValueError(f"face chips must be (B, 3, H, W) RGB, got shape {tuple(chips.shape)}")

    def features(self, chips: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Activations after the stem and after each stage (6 tensors), and the descriptors (B,128)."""
        self._check_chips(chips)
        x = (chips - self.input_mean[:, None, None]) / 256.0
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), 3, 2)
        activations = [x]
        for stage in self.stages:
            x = stage(x)
            activations.append(x)
        descriptors = self.descriptor(x.mean(dim=(2, 3)))
        return activations, descriptors

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Descriptors (B, 128) of face chips (B, 3, 150, 150), float RGB in 0..255."""
        return self.features(chips)[1]

    # ------------------------------------------------------------------------------------------
    # Loading dlib's weights

    def _dlib_layer_plan(self) -> list[tuple[str, nn.Module | None, dict]]:
        """The layers dlib stores for this architecture, input side first: (kind, module, options)."""
        plan: list[tuple[str, nn.Module | None, dict]] = [
            ("input", None, {}),
            ("con", self.stem_conv, {}),
            ("affine", self.stem_affine, {}),
            ("relu", None, {}),
            ("max_pool", None, {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0)}),
        ]
        for stage in self.stages:
            for block in stage:
                plan += [
                    ("tag_or_skip", None, {}),
                    ("con", block.conv1, {}),
                    ("affine", block.affine1, {}),
                    ("relu", None, {}),
                    ("con", block.conv2, {}),
                    ("affine", block.affine2, {}),
                ]
                if block.downsample:
                    plan += [
                        ("tag_or_skip", None, {}),
                        ("tag_or_skip", None, {}),
                        ("avg_pool", None, {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}),
                    ]
                plan += [("add_prev", None, {}), ("relu", None, {})]
        plan += [
            ("avg_pool", None, {"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)}),
            ("fc", self.descriptor, {}),
        ]
        return plan

    @torch.no_grad()
    def load_dlib_network(self, network: DlibNetwork, source: str = "dlib network") -> None:
        """Copy the weights of a parsed dlib network into this module, checking every layer."""
        plan = self._dlib_layer_plan()
        found = [layer.kind for layer in network.layers]
        expected = [kind for kind, _, _ in plan]
        num_convs = found.count("con")
        if found != expected:
            first = next(
                (i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found), len(expected))
            )
            raise DlibModelError(
                f"{source}: not dlib_face_recognition_resnet_model_v1: expected {len(expected)} layers with "
                f"{expected.count('con')} convolutions, found {len(found)} layers with {num_convs}; "
                f"first difference at layer {first}: expected {expected[first : first + 1]}, "
                f"found {found[first : first + 1]}"
            )
        for index, ((kind, module, options), layer) in enumerate(zip(plan, network.layers)):
            where = f"{source}: layer {index} ({layer.name or kind})"
            for key, value in options.items():
                if tuple(layer.options.get(key, ())) != value:
                    raise DlibModelError(f"{where}: {key} is {layer.options.get(key)}, expected {value}")
            if layer.options.get("disabled"):
                raise DlibModelError(f"{where}: disabled layers are not supported")
            if kind == "input":
                size = layer.options.get("size")
                if size is not None and tuple(size) != (CHIP_SIZE, CHIP_SIZE):
                    raise DlibModelError(f"{where}: input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
                self.input_mean.copy_(torch.from_numpy(layer.arrays["mean"]))
            elif kind == "con":
                assert isinstance(module, nn.Conv2d)
                stride = module.stride
                padding = module.padding
                if (layer.options["stride"], layer.options["padding"]) != (stride, padding):
                    raise DlibModelError(
                        f"{where}: stride/padding {layer.options}, expected {stride}/{padding}"
                    )
                _copy_checked(module.weight, layer.arrays["weight"], where)
                _copy_checked(module.bias, layer.arrays["bias"], where)
            elif kind == "affine":
                assert isinstance(module, ChannelAffine)
                _copy_checked(module.scale, layer.arrays["scale"], where)
                _copy_checked(module.shift, layer.arrays["shift"], where)
            elif kind == "fc":
                assert isinstance(module, nn.Linear)
                if "bias" in layer.arrays:
                    raise DlibModelError(f"{where}: the descriptor layer has a bias, expected none")
                _copy_checked(module.weight, layer.arrays["weight"].T, where)

    @classmethod
    def from_dlib_file(cls, path: str | os.PathLike | None = None) -> FaceIdentityNet:
        """Load dlib's face-recognition network (default: the face-recognition-models package's
        file). The returned module is in eval mode with gradients switched off for its weights."""
        path = default_dlib_model_path() if path is None else Path(path)
        net = cls()
        net.load_dlib_network(read_dlib_network(path), str(path))
        net.eval()
        net.requires_grad_(False)
        return net


def _copy_checked(target: torch.Tensor | None, value: np.ndarray, where: str) -> None:
    expected = None if target is None else tuple(target.shape)
    if target is None or expected != value.shape:
        raise DlibModelError(f"{where}: parameter shape {value.shape}, expected {expected}")
    if not np.all(np.isfinite(value)):
        raise DlibModelError(f"{where}: parameters contain NaN or infinity")
    target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


# ----------------------------------------------------------------------------------------------
# Identity loss


def to_dlib_pixels(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Map images from value_range to dlib's 0..255 pixel scale."""
    low, high = value_range
    return (images - low) * (255.0 / (high - low))


def chip_features(
    network: nn.Module,
    fake: torch.Tensor,
    real: torch.Tensor,
    fake_landmarks: torch.Tensor,
    real_landmarks: torch.Tensor,
    align: Callable[..., torch.Tensor] = align_face_chips,
    chip_size: int = 150,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[tuple[list[torch.Tensor], torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]:
    """((fake blocks, fake descriptor), (real blocks, real descriptor)) of a face network on aligned chips.

    `network.features(chips 0..255) -> (block activations, descriptor)` (FaceIdentityNet or a stand-in);
    `align(images 0..255, landmarks (B, 68, 2), size=chip_size) -> chips`. Images are in value_range.
    Gradients flow to `fake` only: the real side is a constant target.
    """
    fake_chips = align(to_dlib_pixels(fake, value_range), fake_landmarks, size=chip_size)
    with torch.no_grad():
        real_chips = align(to_dlib_pixels(real, value_range), real_landmarks, size=chip_size)
        real_side = network.features(real_chips)
    return network.features(fake_chips), real_side


def identity_feature_loss(
    net: FaceIdentityNet,
    fake: torch.Tensor,
    real: torch.Tensor,
    fake_landmarks: torch.Tensor,
    real_landmarks: torch.Tensor | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    feature_weight: float = 1.0,
    descriptor_weight: float = 1.0,
) -> torch.Tensor:
    """Identity loss between generated and real frames on dlib-aligned face chips:
    feature_weight * mean over stages of L1(activations) + descriptor_weight * mean(1 - cosine).

    fake, real: (B, 3, H, W) in value_range; landmarks (B, 68, 2) pixel coordinates (real_landmarks
    defaults to fake_landmarks). Gradients flow to `fake` only.
    """
    real_landmarks = fake_landmarks if real_landmarks is None else real_landmarks
    (fake_features, fake_descriptors), (real_features, real_descriptors) = chip_features(
        net, fake, real, fake_landmarks, real_landmarks, value_range=value_range
    )
    feature_term = torch.stack(
        [
            F.l1_loss(fake_feature, real_feature)
            for fake_feature, real_feature in zip(fake_features, real_features)
        ]
    ).mean()
    descriptor_term = (1 - F.cosine_similarity(fake_descriptors, real_descriptors, dim=1)).mean()
    return feature_weight * feature_term + descriptor_weight * descriptor_term
