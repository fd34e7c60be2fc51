"""Typed configuration: one dataclass per job, named presets, and `section.field=value` overrides.

Every default that comes from the paper or the authors' code says so in a comment; docs/training.md
("Configuration") lists the training settings, and ../shared/paper-notes.md the paper's sources.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metahead.fileio import atomic_write_text


@dataclass
class ModelConfig:
    image_size: int = 256  # paper: 256²
    base_channels: int = 64  # lab: num_channels 64
    max_channels: int = 512  # lab: max 512
    embedding_dim: int = 512  # N in the paper
    # G downsamples the landmark image to this resolution, runs its AdaIN bottleneck there, then upsamples.
    generator_bottleneck_resolution: int = 16
    num_bottleneck_blocks: int = 4
    attention_down_resolution: int = 32  # paper: self-attention at 32x32 in every down path
    attention_up_resolution: int = 64  # paper: at 64x64 in G's up path
    # G's up-path widths (the paper is silent): "lab" = the authors' lab code (generators/FSTH.py), twice
    # the down path's width at each resolution below image_size (512, 256, 128 at 32², 64², 128²; 64 at
    # 256²); "mirror" = the down path's widths (metahead before issue 19; the CPU presets keep it).
    generator_up_widths: str = "lab"
    # How G's up blocks double the resolution (main and skip path): "nearest" (the lab code's) or "bilinear".
    # Nearest leaves a mosaic on the 8-px grid of a 64² G until it is trained long (metric `blockiness`).
    generator_upsampling: str = "nearest"
    # Skips from G's encoder into its decoder (the paper's G has none): each up block's output gets a 1x1
    # conv of the down path's activation at its resolution added, and the full-resolution one a 3x3 conv of
    # the landmark image itself, so that where the landmarks put an eye or the lips reaches the decoder
    # without passing the bottleneck. Small CPU models learn the face's fine parts far sooner with them
    # (docs/training.md, "Encoder skips and the Laplacian loss").
    generator_skips: bool = False
    # A pretrained identity prior in E (not in the paper): "dlib" adds to each frame's embedding ê(k) a
    # learned projection of dlib's face descriptor of the frame (a network trained on ~3M faces), as
    # SimSwap and FaceShifter feed ArcFace's identity into AdaIN; 131 real training people teach E and P
    # little identity for FF. "none": E alone (the paper). Alone, on held-out real-train people FF's CSIM
    # moved +0.005 (7/12), within checkpoint noise (docs/networks.md); with the content loss's identity term
    # as well (loss.identity_network=dlib, weight 0.5) +0.015 (11/12), where the term alone gave +0.006
    # (docs/results.md, session 19). real-64 takes both (its comment has the real-dev measurement).
    identity_prior: str = "none"
    # The prior's descriptors standardised before their projection: minus their mean over the training
    # frames, over their spread per component (both measured at the start of a fresh run and kept in the
    # model). Faces share most of a dlib descriptor (two strangers' cosine ~0.85 on real-dev): the part
    # that tells people apart is the small rest, which the zero-started projection learns at Adam's
    # pace only after the shared part's. False: the descriptors as they come (unit length x sqrt(128)).
    identity_prior_standardised: bool = False
    discriminator_final_resolution: int = 4  # paper: one extra residual block at 4x4
    embedder_final_resolution: int = 4  # E's down path ends where D's does (paper: same blocks as D's V)
    spectral_norm: bool = True  # paper: on every conv and linear layer, P included
    # Weight init before spectral norm: "orthogonal" (BigGAN's choice; see docs/networks.md) or "xavier".
    weight_init: str = "orthogonal"


@dataclass
class LossConfig:
    # L_CNT. Paper v1 weights (arXiv 1905.08233v1); v2 / ICCV and the ports use 1.5e-1 / 2.5e-2
    # (preset paper-256-v2).
    vgg19_weight: float = 1e-2
    vggface_weight: float = 2e-3
    vgg19_weights_path: str | None = None  # or env METAHEAD_VGG19_WEIGHTS
    vggface_weights_path: str | None = None  # or env METAHEAD_VGGFACE_WEIGHTS
    # Input convention of the weight files (docs/losses.md): "caffe" = BGR, 0-255, mean subtracted (the
    # paper's Caffe releases); "torchvision" = RGB [0,1] ImageNet mean/std; "matconvnet" = RGB 0-255 minus
    # the VGG-Face mean (the vgg_face_dag.pth conversion).
    vgg19_input: str = "caffe"
    vggface_input: str = "caffe"
    # Without VGG weights a run refuses to start unless this is true: then it trains on the offline
    # content loss below (pixel L1 + identity features). The paper presets need the VGG files; the CPU
    # presets, the demo and the tests allow the offline loss.
    allow_offline: bool = False
    # Used when no VGG weights are configured (documented in docs/losses.md).
    # dlib face-recognition features on aligned chips; calibrated on real faces so that for a blurred frame
    # the weighted identity term is ~3x the pixel term (benchmarks/calibrate_identity_weight.py).
    identity_weight: float = 5e-2
    pixel_weight: float = 1.0  # multi-scale L1 on pixels
    pixel_scales: int = 3  # offline default: L1 at full, 1/2, 1/4 resolution
    # L1 between the band-pass levels of the two images' Laplacian pyramids (pixel_scales levels, offline
    # loss only; 0: off). Plain pixel L1 is dominated by the low frequencies, which a conv net fits first;
    # this term weighs the fine detail (eyes, lips, edges) on its own (Bojanowski et al. 2018's Lap1 loss).
    laplacian_weight: float = 0.0
    identity_network: str = "dlib"  # offline default's identity features: "dlib" or "none"
    # L_ADV = -D(x̂) + feature matching.
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 10.0  # ports: 10
    # L_MCH: L1 between ê_i(k) and W_i (FT model only). v1 ports: 80; v2 ports: 10.
    match_weight: float = 80.0


@dataclass
class TrainConfig:
    data: str = ""
    out: str = ""
    finetunable: bool = True  # True: the "FT" model (with L_MCH); False: the feed-forward "FF" model
    shots: int = 8  # K frames embedded per episode (paper: 8)
    batch_size: int = 1  # episodes per step per process
    steps: int = 100_000
    lr_generator: float = 5e-5  # E, G, P (paper)
    lr_discriminator: float = 2e-4  # D (paper)
    adam_betas: tuple[float, float] = (0.0, 0.999)  # lab
    discriminator_steps: int = 1  # D updates per G update
    amp: str = "none"  # "none" | "bf16" | "auto" (bf16 where the device computes it natively: CUDA, AMX)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    time_limit_minutes: float = 0.0  # stop with a checkpoint once this much wall time has passed; 0: none
    # Where W (D's per-video embeddings) starts in a fresh FT run (training/video_embeddings.py):
    # "embedder": W_i = the initial E's embedding ê_i of video i; "centred": ê_i minus the mean of ê over
    # all training videos; "random": nn.Embedding's normal init with std 1/N. With "random", L_MCH (x80)
    # drags ê towards W's tiny init and E's final ReLU dies (measured; docs/training.md). "centred" is the
    # default: E's outputs are ReLU sums, all positive, so with "embedder" D's first scores were +150 to
    # +260 (a shared offset in every W_i); centred they are ~15, and the demo preset meta-trained 1,000 steps
    # gave FT SSIM 0.581 vs 0.550 and FF 0.232 vs 0.211 on its test videos (docs/training.md, issue 18).
    video_embedding_init: str = "centred"
    # The chance that an episode's frames are all mirrored left to right, landmarks with them (a mirrored
    # person is a plausible other face: more appearances for E and G to generalise from; 0: never). real-64
    # at 0.5, 20,000 steps: real-dev FF SSIM +0.029 and FT +0.010, FF CSIM -0.004, but seen people's FF SSIM
    # -0.036; not in any preset (docs/results.md, "session 11").
    mirror_probability: float = 0.0
    # The chance that an episode's frames are all recoloured alike (hue, saturation, brightness; ranges in
    # data/episodes.py): unseen people's FF avatars came out in the training people's colours, and a
    # recoloured person is another appearance to learn to carry (0: never). real-64 at 0.5, 55 min, held-out
    # people: FF SSIM +0.010 step-matched (t 1.2), FF CSIM -0.002; in no preset (docs/results.md, session 18).
    colour_jitter_probability: float = 0.0
    # Running average of E's and G's weights for samples, the model file and avatars (lab: 0.999); 0: off.
    ema_decay: float = 0.0


@dataclass
class FinetuneConfig:
    shots: int = 8  # T
    # The paper: fine-tuning converges "after a few steps"; no counts or rates given (open). Chosen by
    # measurement on the synthetic corpus (docs/avatars.md): held-out error still falls at 160 steps at
    # the meta-learning rate; 4x that rate for G and ψ' reaches in ~40-100 steps what 160 steps do at 1x.
    steps: int = 100
    # At least this many passes over the T shots: beyond steps * batch_size / min_passes shots, the steps
    # grow with T (at 400 steps of 2, T = 32 sees each shot a quarter as often as T = 8 and re-renders its
    # own shots worse; docs/avatars.md). 0: `steps` whatever T. A step count asked for explicitly (--steps,
    # Avatar.create(steps=...)) is taken as it is.
    min_passes: float = 0.0
    batch_size: int = 4
    lr_generator: float = 2e-4  # G and ψ' (4x the meta-learning rate 5e-5; measured)
    # G's person-generic weights ψ learn at this multiple of lr_generator (ψ' at lr_generator itself): below
    # 1 fine-tuning keeps more of what meta-learning put into G; 0 freezes them (the paper tunes all of G).
    generic_rate_scale: float = 1.0
    lr_discriminator: float = 2e-4  # D and w' (the paper's D rate)
    # "cosine": both rates fall to 0 along a half cosine over `steps` (the last steps settle instead of
    # jittering at full rate); "constant": they stay.
    schedule: str = "constant"
    # Adam's betas here. Meta-learning keeps the lab's β1 = 0 for the adversarial game; fine-tuning is mostly
    # fitting T frames, where momentum (β1 = 0.9) converges faster (measured on the demo: docs/avatars.md).
    adam_betas: tuple[float, float] = (0.0, 0.999)
    # A time budget: stop after this much wall time even if steps remain (0: none). With "cosine" the rates
    # fall along whichever runs out first, so an avatar cut short still ends at a settled rate.
    minutes: float = 0.0
    seed: int = 0

    def steps_for(self, shots: int) -> int:
        """The fine-tuning steps for T = `shots` frames: `steps`, or more where `min_passes` needs them."""
        return max(self.steps, math.ceil(self.min_passes * shots / self.batch_size))


@dataclass
class SynthConfig:
    identities: int = 20
    videos_per_identity: int = 3
    frames: int = 32
    size: int = 128
    seed: int = 0
    test_fraction: float = 0.2


@dataclass
class ExperimentConfig:
    preset: str = "paper-256"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """From to_dict's output, also as written by older metahead versions (see _upgrade)."""
        return _from_dict(cls, _upgrade(data))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid metahead config: {err}") from err


VIDEO_EMBEDDING_INITS = ("embedder", "centred", "random")  # train.video_embedding_init
GENERATOR_UP_WIDTHS = ("lab", "mirror")  # model.generator_up_widths
IDENTITY_PRIORS = ("none", "dlib")  # model.identity_prior

# Fields added after config files were first written, with the value an older file meant by leaving
# them out (so that old runs, model files and avatars load as what they were).
_ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "model": {"generator_up_widths": "mirror"},
    "loss": {"allow_offline": True},
}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An older config dict in today's fields: added fields get their old meaning, and the boolean
    train.init_video_embeddings becomes train.video_embedding_init ("embedder" or "random")."""
    data = copy.deepcopy(data)
    for section, added in _ADDED_FIELDS.items():
        if isinstance(data.get(section), dict):
            for name, value in added.items():
                data[section].setdefault(name, value)
    train = data.get("train")
    if isinstance(train, dict) and "init_video_embeddings" in train:
        initialise = train.pop("init_video_embeddings")
        train.setdefault("video_embedding_init", "embedder" if initialise else "random")
    return data


def _paper_256() -> ExperimentConfig:
    """The paper's v1 (arXiv 1905.08233v1, May 2019): L_CNT weights 1e-2 (VGG19) and 2e-3 (VGGFace), L_MCH
    80 (v1 ports). Needs the two VGG weight files (docs/losses.md). The dataclass defaults are this preset.
    """
    return ExperimentConfig(preset="paper-256")


def _paper_256_v2() -> ExperimentConfig:
    """The paper's v2 (arXiv 1905.08233v2, Sep 2019, the ICCV version) as the public ports read it:
    L_CNT weights 1.5e-1 (VGG19) and 2.5e-2 (VGGFace), L_MCH 10. Everything else as paper-256."""
    cfg = _paper_256()
    cfg.preset = "paper-256-v2"
    cfg.loss.vgg19_weight = 1.5e-1
    cfg.loss.vggface_weight = 2.5e-2
    cfg.loss.match_weight = 10.0
    return cfg


def _cpu_128() -> ExperimentConfig:
    cfg = ExperimentConfig(preset="cpu-128")
    cfg.model = ModelConfig(
        image_size=128,
        base_channels=32,
        max_channels=256,
        embedding_dim=256,
        generator_bottleneck_resolution=16,
        num_bottleneck_blocks=3,
        generator_up_widths="mirror",  # what the CPU presets' measurements and tuning were made with
    )
    cfg.loss.allow_offline = True  # no VGG files on the CPU machines this was made for
    cfg.train.amp = "auto"  # bf16 is ~10x slower than fp32 on CPUs without native bf16 (AVX2 only)
    return cfg


def _cpu_64() -> ExperimentConfig:
    """cpu-128's widths at 64², with a smaller bottleneck."""
    cfg = _cpu_128()
    cfg.preset = "cpu-64"
    cfg.model = dataclasses.replace(
        cfg.model, image_size=64, generator_bottleneck_resolution=8, num_bottleneck_blocks=2
    )
    cfg.train.sample_every = 200
    cfg.train.checkpoint_every = 200
    return cfg


def _demo() -> ExperimentConfig:
    """`metahead demo`: a model that meta-learns something visible in ~5 minutes on two CPU cores.

    cpu-64 at half its widths, attending at lower resolutions.
    """
    cfg = _cpu_64()
    cfg.preset = "demo"
    cfg.model = dataclasses.replace(
        cfg.model,
        base_channels=16,
        max_channels=128,
        embedding_dim=128,
        # cpu-64 attends at 64² in G's up path: a 4096² map per image, most of G's time on a CPU.
        attention_down_resolution=16,
        attention_up_resolution=32,
        # Nearest upsampling leaves an 8-px mosaic that minutes of training do not smooth. 5 minutes each,
        # the demo's 3 test videos at T = 8: FT SSIM 0.836 vs 0.807, FF 0.450 vs 0.344, FT blockiness
        # 1.12 vs 1.19; real-64 on real-dev (18 sources): FT blockiness 1.07 vs 1.21 at level SSIM and CSIM
        # (docs/training.md, "G's upsampling").
        generator_upsampling="bilinear",
        # Skips from G's encoder and the Laplacian term below: without them the FT faces had no eyes or lips.
        # 5 minutes each, the demo's 3 test videos at T = 8, as it was / + both: FT SSIM 0.832 / 0.873, CSIM
        # 0.898 / 0.917, sharpness 0.47 / 0.56, FF SSIM 0.462 / 0.496, D gap 0.14 / 0.41 (docs/training.md,
        # "Encoder skips and the Laplacian loss").
        generator_skips=True,
    )
    cfg.loss.laplacian_weight = 90.0  # x200: level (FT 0.877, FF 0.508) with more grid-aligned edges
    cfg.loss.identity_network = "none"  # the dlib identity term costs ~40% of a step at this size
    # L_MCH: after 5 minutes of meta-training (~1,300 steps, W initialised from E), the FF avatars' held-out
    # L1 on the test split was 0.33 at weight 1 and 0.40 at the paper's 80: in a short run a heavy L_MCH
    # holds ê to W instead of letting it serve G.
    cfg.loss.match_weight = 1.0
    # Pixel L1 x10 (as real-64): with the offline loss the hinge and feature-matching terms outweigh L1 at
    # x1. 1,000 steps, W centred, test videos at T = 8: FF SSIM 0.292 vs 0.232, FT (50 steps) 0.652 vs 0.581
    # (docs/training.md, issue 18); blurrier FF (sharpness 0.22 vs 0.45), which fine-tuning then sharpens.
    cfg.loss.pixel_weight = 10.0
    cfg.train.shots = 4
    cfg.train.lr_generator = 2e-4  # minutes, not days: 4x the paper's rate
    # Two D steps per G step: in 5 minutes D otherwise barely plays (real - fake score gap 0.27-0.30 over the
    # last fifth). `make demo`-equivalent runs, 2026-12-03: gap 1.96 vs 0.30, 14% fewer meta-steps, FT SSIM
    # 0.880 vs 0.889 and sharpness 0.71 vs 0.79 on 6 test videos, FF 0.495 vs 0.468 on all 12
    # (docs/results.md, "2026-12-03").
    cfg.train.discriminator_steps = 2
    cfg.train.num_workers = 0  # decoding 5 small JPEGs per step: worker processes cost more than they save
    cfg.train.log_every = 5
    cfg.train.sample_every = 100
    cfg.train.checkpoint_every = 100
    cfg.train.time_limit_minutes = 5.0
    # Fine-tuning that converges (issue 18; docs/avatars.md): on a demo model (1,000 steps, W centred, L1
    # x10), T = 8, 3 test videos, 300 steps of 4 frames at 1e-3 falling along a cosine, with momentum:
    # held-out SSIM 0.842 and the shots re-rendered at 0.856 (β1 = 0: 0.815 / 0.827; the old 50 constant
    # steps: 0.652); held-out L1 stops falling by step 250. That took ~100 s per avatar on two cores; to
    # make one in about a minute: batches of 2 (~0.21 s per step on one quiet core, ~0.33 for 4), 280
    # steps (on the 5-minute demo model, 220 steps of 2 gave held-out SSIM 0.808, 145 steps of 4 0.801).
    # With bilinear G (5-minute model, its 3 test videos): 160 / 200 / 240 / 280 steps gave FT SSIM 0.798 /
    # 0.817 / 0.829 / 0.836, at 0.25-0.37 s a step on two cores (1 or 2 threads alike). 220: FT SSIM 0.821
    # in `make demo`, 71-82 s on this machine (a minute would be ~180 steps, ~0.80; docs/results.md).
    # With G's encoder skips the step is cheaper to converge on: the 2026-12-03 `make demo` model, its 3
    # test videos, 220 / 400 / 600 steps: FT SSIM 0.874 / 0.890 / 0.897, CSIM 0.927 / 0.945 / 0.946,
    # sharpness 0.57 / 0.79 / 0.89; 400 steps took ~54 s on two cores that made 220 in 30 s. A machine
    # slower than that can cap it with finetune.minutes (the cosine then follows the clock).
    cfg.finetune.steps = 400
    # ... for T <= 8; beyond, the steps grow with T (100 passes over the shots: T = 32 takes 1,600 steps,
    # ~4 min on two cores). The 03:16 `make demo` model, 4 test videos, T = 32: 400 / 800 / 1,600 steps gave
    # FT SSIM 0.897 / 0.923 / 0.941 (nearest shot 0.935), the shots re-rendered at 0.900 / 0.927 / 0.946.
    cfg.finetune.min_passes = 100
    cfg.finetune.batch_size = 2
    cfg.finetune.lr_generator = 1e-3
    cfg.finetune.schedule = "cosine"
    cfg.finetune.adam_betas = (0.9, 0.999)
    return cfg


def _real_64() -> ExperimentConfig:
    """Meta-learning on a small real corpus (real-train + real-train-2, ~33k frames) for hours on 2 CPU cores.

    The demo's networks at twice their width, with the demo's rates, the paper's K = 8 and no time limit.
    """
    cfg = _demo()
    cfg.preset = "real-64"
    # Twice the demo's channels (32 at 64², up to 256) and the lab code's up widths: G 1.65M parameters
    # instead of 0.38M, 0.58x the steps/s. Step for step on 10 held-out training people (FT, T = 8, 800
    # steps, 9 sources, at 14,500 steps): SSIM +0.028 (9/9, paired t 5.4), CSIM +0.008 (8/9), ghosting gone
    # from the grids; FF on real-dev SSIM +0.034 (14/18), CSIM level. The avatar takes ~2x as long and a
    # frame ~1.8x (docs/results.md and docs/performance.md, "G's width").
    cfg.model = dataclasses.replace(cfg.model, base_channels=32, max_channels=256, generator_up_widths="lab")
    # FF's identity on unseen people: E's identity prior (dlib's descriptor of each frame added to ê) and the
    # content loss's identity term (dlib's block features, x0.5) together. Chosen on 10 held-out training
    # people, step for step (session 19: FF CSIM +0.015, 11/12, t 3.9); confirmed on real-dev at equal
    # minutes (session 20, 105 min each on a 2-core AMD EPYC, bf16, 23,482 steps against 29,185): FF CSIM
    # 0.912 vs 0.903 (+0.010, 14/18, t 2.7), landmark error -0.004, SSIM level; FT at T = 8 (9 sources)
    # CSIM 0.977 vs 0.972 (+0.005, 8/9, t 3.4), level with the nearest shot's, SSIM level (0.822). Costs:
    # 0.8x the meta-training steps/s (the descriptors are computed once per frame) and ~1.24x the time per
    # avatar (the term in fine-tuning). All three use dlib's network, as CSIM does (docs/results.md).
    cfg.model.identity_prior = "dlib"
    cfg.loss.identity_network = "dlib"
    # The term x4 (it was x0.5): with the prior its weight moves FF's identity on real-dev off the 0.91
    # plateau, with the dose (session 22, step for step against the x0.5 run: x2 +0.006 CSIM at 21,000
    # steps, x4 +0.008 at 9,000 and 11,500, 15-16/18; FF SSIM +0.017, landmarks level; FF CSIM 0.9205 at 60
    # minutes). FT at T = 8 level (SSIM 0.822 both, CSIM +0.001). Same steps/s: the term is computed at any
    # weight. A second seed (session 23) read FF CSIM 0.915 at 11,500 steps (+0.003 over x0.5 there) and
    # FF SSIM +0.018 to +0.024: the SSIM gain holds, the identity gain is seed-sized. The term and CSIM
    # share dlib's network (docs/results.md, sessions 22-23).
    cfg.loss.identity_weight = 4.0
    # The demo's pixel L1 x10 matters most here: at x1 the hinge and feature-matching terms drove G, and on
    # real-train the samples collapsed to one grey image for everybody by step 3,500 (docs/training.md).
    cfg.train.shots = 8
    cfg.train.steps = 20_000
    # One D step: over ~12,000 steps D plays by itself here (gap 0.78 over the last fifth of the 40-minute
    # run of docs/results.md), and every real-dev figure was measured so; two are not measured on real faces.
    cfg.train.discriminator_steps = 1
    # train.amp stays "auto" (cpu-128's): on a 2-core AMX CPU bf16 autocast made 1.28x the steps of fp32 in
    # the same 55 minutes, step for step the same content loss, at equal minutes FT +0.004 SSIM (7/9) and
    # FF level on held-out people (docs/results.md, session 17). The figures marked fp32 used amp=none.
    cfg.train.time_limit_minutes = 0.0
    cfg.train.log_every = 20
    cfg.train.sample_every = 500
    cfg.train.checkpoint_every = 500
    # Fine-tuning: 800 steps up to T = 8 (the demo's 400 is held to its one-minute avatar; here identity
    # detail decides). The 2-hour real-64 model, T = 8, held-out frames of 12 real-train sources (other
    # videos of the person where there are some; chosen there, not on real-dev): 800 against 400 steps
    # gave CSIM +0.006 (ahead for 10 of 12, paired t 4.5) at level SSIM (-0.001), shots re-rendered at
    # 0.966 instead of 0.943, about twice the time per avatar; on real-dev, confirmed once: CSIM +0.003
    # (14/18) (docs/results.md, "800 fine-tuning steps at T = 8"). T = 32 keeps 1,600 (min_passes).
    cfg.finetune.steps = 800
    return cfg


def _tiny() -> ExperimentConfig:
    """For tests: seconds per step on one core."""
    cfg = ExperimentConfig(preset="tiny")
    cfg.model = ModelConfig(
        image_size=32,
        base_channels=8,
        max_channels=32,
        embedding_dim=32,
        generator_bottleneck_resolution=8,
        num_bottleneck_blocks=1,
        attention_down_resolution=16,
        attention_up_resolution=16,
        discriminator_final_resolution=4,
        generator_up_widths="mirror",
    )
    cfg.loss.allow_offline = True
    cfg.train.shots = 2
    cfg.train.num_workers = 0
    cfg.train.log_every = 1
    cfg.finetune.shots = 2
    cfg.finetune.steps = 2
    return cfg


PRESETS: dict[str, typing.Callable[[], ExperimentConfig]] = {
    "paper-256": _paper_256,
    "paper-256-v2": _paper_256_v2,
    "cpu-128": _cpu_128,
    "cpu-64": _cpu_64,
    "demo": _demo,
    "real-64": _real_64,
    "tiny": _tiny,
}


def preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def preset_with_overrides(spec: str) -> ExperimentConfig:
    """ "NAME" or "NAME:section.field=value,section.field=value": a preset with overrides in one string (the
    benchmarks' --presets, to compare variants of a preset in one run)."""
    name, _, overrides = spec.partition(":")
    return apply_overrides(preset(name), [o for o in overrides.split(",") if o])


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply `section.field=value` strings (e.g. `train.steps=100`, `model.base_channels=16`)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        target: Any = cfg
        for name in parts[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, name):
                raise ValueError(f"override {item!r}: no config section {name!r}")
            target = getattr(target, name)
        name = parts[-1]
        fields = {f.name: f for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
        if name not in fields:
            raise ValueError(f"override {item!r}: unknown field {key!r}")
        hints = typing.get_type_hints(type(target))
        setattr(target, name, _parse_value(raw.strip(), hints[name], key))
    return cfg


def apply_section_overrides(
    cfg: ExperimentConfig, overrides: Sequence[str], sections: Sequence[str], where: str
) -> ExperimentConfig:
    """apply_overrides limited to `sections` (e.g. a model's fine-tuning settings, which a user may change
    when making an avatar, unlike its networks); `where` names the option in the error."""
    outside = [o for o in overrides if o.strip().split(".", 1)[0] not in sections]
    if outside:
        allowed = " or ".join(f"{s}.FIELD=VALUE" for s in sections)
        raise ValueError(f"{where} takes {allowed} (the model's other settings are fixed), got {outside}")
    return apply_overrides(cfg, list(overrides))


def _parse_value(raw: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", ""):
            return None
        non_none = [a for a in args if a is not type(None)]
        return _parse_value(raw, non_none[0], key)
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true/false, got {raw!r}")
    if origin is tuple:
        items = [s for s in raw.strip("()[] ").split(",") if s.strip()]
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]: any length
            args = (args[0],) * len(items)
        elif len(items) != len(args):
            raise ValueError(f"{key}: expected {len(args)} comma-separated values, got {raw!r}")
        return tuple(_parse_value(s.strip(), a, key) for s, a in zip(items, args))
    try:
        return typ(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: cannot read {raw!r} as {getattr(typ, '__name__', typ)}") from err


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
    for name, value in data.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _from_dict(typ, value)
        elif typing.get_origin(typ) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
