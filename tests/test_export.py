"""metahead.export: the exported avatar generator computes what eager G(·, ψ) computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import open_attention, random_images, tiny_model_config
from metahead import export
from metahead.models import Generator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def avatar_generator() -> tuple[Generator, torch.Tensor]:
    """A G of cpu-64's structure (64²: every fast path runs) with few channels, attention open, and a ψ."""
    torch.manual_seed(0)
    cfg = tiny_model_config("cpu-64")
    generator = Generator(cfg).eval()
    open_attention(generator)
    psi = generator.project(torch.randn(1, cfg.embedding_dim)).detach()
    return generator, psi


def test_torch_export_matches_eager_for_any_batch_and_round_trips(avatar_generator, tmp_path: Path) -> None:
    generator, psi = avatar_generator
    program = export.export_generator(generator, psi)
    path = export.save_program(program, tmp_path / "avatar.pt2")
    loaded = torch.export.load(path).module()
    for batch in (1, 3):
        y = random_images(batch, 64, batch)
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
        y = random_images(batch, 64, 10 + batch)
        with torch.no_grad():
            expected = generator(y, adain_params=psi).numpy()
        (got,) = session.run(None, {"landmark_images": y.numpy()})
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4
