"""The settings of `metahead app` (AppConfig): where its model and work folder are, what the page accepts,
what it makes. The CLI maps its flags onto them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metahead import perf


@dataclass
class AppConfig:
    """Settings of `metahead app` (the CLI maps its flags onto these)."""

    model: Path | None = None  # model file; None: the model `make demo` trains (demo_model_candidates)
    host: str = "127.0.0.1"
    port: int = 7860
    work_dir: Path | None = None  # avatars and videos made; None: a new temporary folder, removed at exit
    device: str = "cpu"  # cpu, cuda, cuda:1, or auto
    threads: int = 0  # torch threads of the app's process (launch); 0: $OMP_NUM_THREADS or the idle cores
    concurrency: int = 2  # long requests (making, animating) running at once; more wait in the queue
    # limits on what the page accepts
    max_photos: int = 32
    max_upload_mb: float = 50.0  # any one uploaded file
    max_image_pixels: int = 40_000_000
    max_video_seconds: float = 20.0  # a person's video or a driving video
    max_shots: int = 32  # T taken from a video
    # The demo preset fine-tunes 400 steps up to T = 8 (~1 min on two cores), real-64 800, both 1,600 at
    # T = 32 (finetune.min_passes); the page's slider starts at the model's count for T, within this bound.
    max_finetune_steps: int = 1600
    # bf16 autocast while fine-tuning: "auto" takes it only where the hardware computes bf16 (AMX,
    # AVX512-BF16, CUDA): there a real-64 avatar fine-tunes ~1.26x faster at the same SSIM and CSIM
    # (docs/avatars.md)
    finetune_amp: str = "auto"
    max_driver_frames: int = 500  # rendered frames of one animation
    refuse_several_faces: bool = True  # a photo or video frame with several faces is refused (else: largest)
    # output
    driver_frames: int = 75  # length of the synthetic drivers (3 s at 25 fps)
    video_size: int = 256  # result videos are enlarged to about this height
    csim_frames: int = 16  # result frames compared with the photos for CSIM
    # the Live tab: the browser sends a camera frame this often at most (none while one is processed); 30 a
    # second: a 64² avatar keeps up with that on two cores (docs/app.md)
    live_stream_every: float = 1 / 30

    def __post_init__(self) -> None:
        for name in ("max_photos", "max_shots", "max_driver_frames", "driver_frames", "video_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AppConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "max_video_seconds", "max_image_pixels", "live_stream_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AppConfig.{name} must be positive, got {getattr(self, name)}")
        if self.concurrency < 1 or self.max_finetune_steps < 0 or self.csim_frames < 0:
            raise ValueError("AppConfig: concurrency >= 1, max_finetune_steps >= 0 and csim_frames >= 0")
        if self.finetune_amp not in perf.AMP_MODES:
            modes = ", ".join(perf.AMP_MODES)
            raise ValueError(f"AppConfig.finetune_amp must be one of {modes}, got {self.finetune_amp!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"AppConfig.port must be 0..65535, got {self.port}")
