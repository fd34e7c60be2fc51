"""Video and image I/O: H.264 round trips, frame sampling, audio copy, bad files, EXIF orientation."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from metahead.data.format import DataError
from metahead.data.video_io import (
    VideoReadError,
    enlarge_frames,
    iter_video_frames,
    list_images,
    probe_video,
    read_image,
    write_video_file,
)


def _frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Smooth frames (H.264-friendly) whose mean brightness encodes the frame index."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = (xs * 2 + ys).astype(np.float32)
    return [
        np.stack([base + 4 * i, base * 0.5 + 4 * i, np.full_like(base, 6 * i)], -1)
        .clip(0, 255)
        .astype(np.uint8)
        for i in range(count)
    ]


def _write_with_audio(path, seconds: float = 2.0, fps: int = 25) -> None:
    """A test clip with a sine tone: PyAV encodes AAC itself."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        for image in _frames(int(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        t = np.arange(int(seconds * 16000)) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = start
            frame.time_base = Fraction(1, 16000)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)


def test_write_read_round_trip(tmp_path):
    frames = _frames(30)
    path = tmp_path / "clip.mp4"
    assert write_video_file(path, frames, fps=25) == 30
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 30)
    assert info.fps == pytest.approx(25.0)
    assert not info.has_audio
    decoded = list(iter_video_frames(path))
    assert [f.index for f in decoded] == list(range(30))
    assert decoded[10].time == pytest.approx(0.4, abs=1e-3)
    for original, frame in zip(frames, decoded):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert np.abs(frame.image.astype(int) - original.astype(int)).mean() < 3.0  # crf 18: near lossless
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, unlike the private temporary file


def test_sampling_by_fps_and_max_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video_file(path, _frames(50), fps=25)
    assert [f.index for f in iter_video_frames(path, fps=5)] == list(range(0, 50, 5))
    assert [f.index for f in iter_video_frames(path, fps=1)] == [0, 25]
    assert len(list(iter_video_frames(path, fps=25))) == 50  # the source rate keeps every frame
    assert len(list(iter_video_frames(path, fps=100))) == 50  # no frame is invented
    assert [f.index for f in iter_video_frames(path, fps=5, max_frames=3)] == [0, 5, 10]
    with pytest.raises(ValueError, match="positive"):
        list(iter_video_frames(path, fps=0))


def test_odd_sizes_are_padded_and_other_containers(tmp_path):
    frames = [np.full((31, 45, 3), 128, np.uint8)] * 5
    write_video_file(tmp_path / "odd.mkv", frames, fps=29.97)
    info = probe_video(tmp_path / "odd.mkv")
    assert (info.width, info.height) == (46, 32)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    with pytest.raises(ValueError, match="webm"):
        write_video_file(tmp_path / "x.webm", frames, fps=25)


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    frames = [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        write_video_file(path, frames, fps=25)
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="no frames"):
        write_video_file(path, [], fps=25)
    assert not path.exists()


def test_audio_is_copied_and_trimmed(tmp_path):
    source = tmp_path / "talk.mp4"
    _write_with_audio(source, seconds=2.0)
    assert probe_video(source).has_audio
    out = tmp_path / "out.mp4"
    write_video_file(out, _frames(25), fps=25, audio_from=source)  # 1 s of video
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        packets = [p for p in container.demux(audio) if p.pts is not None]
        end = max(float(p.pts * p.time_base) for p in packets)
    assert 0.8 < end <= 1.05  # cut at the video's length
    # A source without audio gives a video without audio.
    silent = tmp_path / "silent.mp4"
    write_video_file(silent, _frames(5), fps=25)
    write_video_file(tmp_path / "out2.mp4", _frames(5), fps=25, audio_from=silent)
    assert not probe_video(tmp_path / "out2.mp4").has_audio


def test_bad_videos_are_named(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match="missing.mp4") as err:
        list(iter_video_frames(missing))
    assert err.value.reason == "unreadable"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 100)
    with pytest.raises(VideoReadError) as err:
        list(iter_video_frames(garbage))
    assert err.value.reason == "unreadable" and "garbage.mp4" in str(err.value)
    assert isinstance(err.value, DataError)
    # A file cut in half (the index is at the front: faststart) decodes only part of its frames.
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    whole = tmp_path / "whole.mp4"
    write_video_file(whole, noisy, fps=25)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoReadError) as err:
        list(iter_video_frames(cut))
    assert err.value.reason == "truncated"


def test_read_image_applies_exif_orientation(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(image).save(tmp_path / "b.jpg", exif=exif, quality=95)
    Image.fromarray(image).save(tmp_path / "a10.png")
    Image.fromarray(image).save(tmp_path / "a2.png")
    (tmp_path / "notes.txt").write_text("not an image")
    upright = read_image(tmp_path / "b.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # the white half is now on top
    assert [p.name for p in list_images(tmp_path)] == ["a2.png", "a10.png", "b.jpg"]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")


def test_enlarge_frames_scales_every_frame_and_keeps_scale_one():
    frames = np.stack(_frames(3, 8, 10))
    big = enlarge_frames(frames, 3)
    assert big.shape == (3, 24, 30, 3) and big.dtype == np.uint8
    assert abs(float(big.mean()) - float(frames.mean())) < 8  # the same picture, only larger
    assert enlarge_frames(frames, 1) is frames
