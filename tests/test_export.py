"""metahead.export: the exported avatar generator computes what eager G(·, ψ) computes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from metahead import export
from metahead.config import preset
from metahead.models import Generator


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def avatar_generator() -> tuple[Generator, torch.Tensor]:
    """A G of cpu-64's structure (64²: every fast path runs) with few channels, attention open, and a ψ."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("cpu-64").model, base_channels=4, max_channels=8, embedding_dim=8)
    generator = Generator(cfg).eval()
    for name, p in generator.named_parameters():
        if name.endswith("gamma"):
            torch.nn.init.constant_(p, 0.5)
    psi = generator.project(torch.randn(1, cfg.embedding_dim)).detach()
    return generator, psi


def landmark_images(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1


def test_torch_export_matches_eager_for_any_batch_and_round_trips(avatar_generator, tmp_path: Path) -> None:
    generator, psi = avatar_generator
    program = export.export_generator(generator, psi)
    path = export.save_program(program, tmp_path / "avatar.pt2")
    loaded = torch.export.load(path).module()
    for batch in (1, 3):
        y = landmark_images(batch, batch)
        with torch.no_grad():
            expected = generator(y, adain_params=psi)
            got = program.module()(y.contiguous(memory_format=torch.channels_last))
            got_loaded = loaded(y)
        assert got.shape == (batch, 3, 64, 64)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_loaded, expected, rtol=1e-4, atol=1e-4)
    # ψ is a constant of the program, not an input; the caller's G still has its spectral norm
    inputs = program.graph_signature.input_specs
    assert [spec.arg.name for spec in inputs if spec.kind.name == "USER_INPUT"] == ["landmark_images"]
    assert hasattr(generator.projection, "parametrizations")


@pytest.mark.slow
def test_onnx_export_matches_eager(avatar_generator, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    generator, psi = avatar_generator
    path = export.export_onnx(generator, psi, tmp_path / "avatar.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        y = landmark_images(batch, 10 + batch)
        with torch.no_grad():
            expected = generator(y, adain_params=psi).numpy()
        (got,) = session.run(None, {"landmark_images": y.numpy()})
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4
