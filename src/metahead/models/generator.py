"""Generator G(y, ê): landmark image → frame of the person whose AdaIN parameters ψ̂ = P ê it is given."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metahead.config import ModelConfig
from metahead.models.blocks import (
    AdaIN,
    DownPath,
    ResidualBlock,
    SelfAttention,
    assign_adain_slices,
    channels_at,
    check_attention_resolution,
    conv2d,
    halvings,
    linear,
)


def up_channels_at(cfg: ModelConfig, resolution: int) -> int:
    """G's up-path width at `resolution` (model.generator_up_widths): "mirror" = the down path's width there;
    "lab" = the authors' lab code, the down path's width one halving further down (twice as wide, capped
    at max_channels), base_channels at full resolution (paper-256: 512 @32², 256 @64², 128 @128², 64 @256²).
    """
    if cfg.generator_up_widths == "mirror":
        return channels_at(cfg, resolution)
    if cfg.generator_up_widths == "lab":
        return channels_at(cfg, resolution // 2) if resolution < cfg.image_size else cfg.base_channels
    raise ValueError(f"model.generator_up_widths={cfg.generator_up_widths!r}: choose 'lab' or 'mirror'")


class Generator(nn.Module):
    """G: residual down blocks with instance norm (on the landmark image) and self-attention, residual
    bottleneck blocks with AdaIN, residual up blocks with AdaIN and self-attention at
    attention_up_resolution, then AdaIN, ReLU, conv, tanh. With model.generator_skips (not the paper's), the
    encoder's activations are added to the decoder's at each resolution.

    Every AdaIN layer owns a disjoint slice of ψ̂ (`adain_layout()`); ψ̂ = P ê with P a spectrally
    normalised linear map (`projection`). forward runs either from ê or from a given ψ (fine-tuning's free
    ψ', rendering's constants).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kw = dict(spectral_norm=cfg.spectral_norm, weight_init=cfg.weight_init)
        bottleneck = cfg.generator_bottleneck_resolution
        self.down = DownPath(cfg, 3, bottleneck, norm="instance", what="generator")
        channels = self.down.out_channels
        self.bottleneck = nn.ModuleList(
            ResidualBlock(channels, channels, norm="adain", **kw) for _ in range(cfg.num_bottleneck_blocks)
        )
        up_resolutions = [
            cfg.image_size // 2**i
            for i in reversed(range(len(halvings(cfg.image_size, bottleneck, "generator"))))
        ]
        check_attention_resolution(
            cfg.attention_up_resolution, up_resolutions, "generator attention_up_resolution"
        )
        self.up = nn.ModuleList()
        self.up_attention = nn.ModuleDict()
        # model.generator_skips: from the encoder's activation at the same resolution (1x1 conv), or at full
        # resolution from the landmark image (3x3 conv: its lines are one or two pixels wide).
        self.skips = nn.ModuleDict()
        encoder_widths = dict(zip(self.down.resolutions, self.down.widths))
        for i, res in enumerate(up_resolutions):
            out = up_channels_at(cfg, res)
            self.up.append(
                ResidualBlock(
                    channels, out, resample="up", norm="adain", upsampling=cfg.generator_upsampling, **kw
                )
            )
            if cfg.generator_skips and res in encoder_widths:
                self.skips[str(i)] = conv2d(encoder_widths[res], out, 1, **kw)
            elif cfg.generator_skips and res == cfg.image_size:
                self.skips[str(i)] = conv2d(3, out, 3, **kw)
            if res == cfg.attention_up_resolution:
                self.up_attention[str(i)] = SelfAttention(out, **kw)
            channels = out
        self.out_norm = AdaIN(channels)
        self.out_conv = conv2d(channels, 3, 3, **kw)
        self._num_adain_params = assign_adain_slices(self)
        # P. Its bias starts at (scale 1, shift 0) for every AdaIN layer so that ψ̂ starts near the identity.
        self.projection = linear(cfg.embedding_dim, self._num_adain_params, **kw)
        with torch.no_grad():
            self.projection.bias.copy_(self.identity_adain_params())

    @property
    def num_adain_params(self) -> int:
        """len(ψ̂): the sum of 2·channels over all AdaIN layers."""
        return self._num_adain_params

    def adain_layers(self) -> list[tuple[str, AdaIN]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, AdaIN)]

    def adain_layout(self) -> list[tuple[str, int, int]]:
        """(layer name, start, stop) of every AdaIN layer's slice of ψ̂, in order."""
        return [(name, m.offset, m.offset + m.num_params) for name, m in self.adain_layers()]

    def identity_adain_params(self) -> torch.Tensor:
        """ψ with scale 1 and shift 0 in every layer: (num_adain_params,)."""
        psi = torch.zeros(self._num_adain_params)
        for _, m in self.adain_layers():
            psi[m.offset : m.offset + m.channels] = 1.0
        return psi

    def project(self, person_embedding: torch.Tensor) -> torch.Tensor:
        """ψ̂ = P ê: (B, N) → (B, num_adain_params)."""
        return self.projection(person_embedding)

    def forward(
        self,
        landmark_images: torch.Tensor,
        person_embedding: torch.Tensor | None = None,
        adain_params: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """landmark_images (B, 3, H, W) in [-1, 1] and exactly one of person_embedding ê (B, N) or
        adain_params ψ (B or 1, num_adain_params) → images (B, 3, H, W) in [-1, 1]."""
        if (person_embedding is None) == (adain_params is None):
            raise ValueError("pass exactly one of person_embedding and adain_params")
        if adain_params is None:
            adain_params = self.project(person_embedding)
        batch = landmark_images.shape[0]
        if adain_params.ndim != 2 or adain_params.shape[1] != self._num_adain_params:
            raise ValueError(
                f"adain_params must have shape (B or 1, {self._num_adain_params}), "
                f"got {tuple(adain_params.shape)}"
            )
        if adain_params.shape[0] not in (1, batch):
            raise ValueError(
                f"adain_params batch {adain_params.shape[0]} does not match landmark batch {batch}"
            )
        adain_params = adain_params.expand(batch, -1)
        encoder = self.down(landmark_images)
        x = encoder[-1]
        for block in self.bottleneck:
            x = block(x, adain_params)
        # The encoder's activation at each resolution, and the landmark image at full resolution.
        skip_sources = {f.shape[-1]: f for f in [landmark_images, *encoder]} if self.skips else {}
        for i, block in enumerate(self.up):
            x = block(x, adain_params)
            if str(i) in self.skips:
                x = x + self.skips[str(i)](skip_sources[x.shape[-1]])
            if str(i) in self.up_attention:
                x = self.up_attention[str(i)](x)
        x = F.relu(self.out_norm(x, adain_params))
        return torch.tanh(self.out_conv(x))
