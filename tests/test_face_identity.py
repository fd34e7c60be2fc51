"""dlib's face-recognition ResNet in PyTorch: parsing, agreement with dlib on real faces, gradients,
bad files, CSIM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metahead.evaluation.csim import csim, csim_from_images, face_descriptors
from metahead.models.face_align import align_face_chips
from metahead.models.face_identity import (
    DLIB_SHAPE_PREDICTOR_68,
    DlibModelError,
    FaceIdentityNet,
    default_dlib_model_path,
    identity_feature_loss,
    read_dlib_network,
)

dlib = pytest.importorskip("dlib")

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-dev" / "image"
# Measured worst case is ~1e-6 (float32 rounding); the bar is 1e-3.
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net() -> FaceIdentityNet:
    return FaceIdentityNet.from_dlib_file()


@pytest.fixture(scope="module")
def dlib_models():
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(default_dlib_model_path(DLIB_SHAPE_PREDICTOR_68))),
        dlib.face_recognition_model_v1(str(default_dlib_model_path())),
    )


def compare_with_dlib(net, dlib_models, image: np.ndarray, upsample: int) -> list[tuple[float, float]]:
    """(network-only error, end-to-end error) in descriptor L2 for every face dlib finds."""
    detector, predictor, recogniser = dlib_models
    errors = []
    for face in detector(image, upsample):
        shape = predictor(image, face)
        landmarks = torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float32)[None]
        expected = np.array(recogniser.compute_face_descriptor(image, shape))
        dlib_chip = torch.from_numpy(dlib.get_face_chip(image, shape, size=150, padding=0.25))
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            on_dlib_chip = net(dlib_chip.permute(2, 0, 1)[None].float())[0].double().numpy()
            end_to_end = net(align_face_chips(pixels, landmarks, quantize=True))[0].double().numpy()
        errors.append((np.linalg.norm(on_dlib_chip - expected), np.linalg.norm(end_to_end - expected)))
    return errors


def test_parse_layers_and_shapes(net):
    network = read_dlib_network(default_dlib_model_path())
    kinds = [layer.kind for layer in network.layers]
    assert network.loss == "loss_metric_2" and kinds[0] == "input" and kinds[-1] == "fc"
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    convs = [layer.arrays["weight"].shape for layer in network.layers if layer.kind == "con"]
    assert convs[0] == (32, 3, 7, 7) and convs[-1] == (256, 256, 3, 3)
    assert [shape[0] for shape in convs].count(256) == 8
    assert network.layers[-1].arrays["weight"].shape == (256, 128) and "bias" not in network.layers[-1].arrays
    np.testing.assert_allclose(network.layers[0].arrays["mean"], [122.782, 117.001, 104.298], rtol=1e-6)
    assert network.layers[0].options["size"] == (150, 150)
    assert sum(p.numel() for p in net.parameters()) == 5_607_488
    assert not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.stem_conv.weight, torch.from_numpy(network.layers[1].arrays["weight"]))


def test_features_shapes(net):
    activations, descriptors = net.features(torch.rand(2, 3, 150, 150) * 255)
    shapes = [tuple(a.shape[1:]) for a in activations]
    # the 8 -> 3 (branch) vs 4 (shortcut) mismatch is zero-padded as dlib's add_prev does
    assert shapes == [(32, 35, 35), (32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    assert descriptors.shape == (2, 128)


def test_missing_and_foreign_files(tmp_path):
    missing = tmp_path / "nothing.dat"
    with pytest.raises(FileNotFoundError, match="nothing.dat"):
        FaceIdentityNet.from_dlib_file(missing)
    # another dlib network (the CNN face detector, loss_mmod) and a non-network dlib file
    detector_file = default_dlib_model_path("mmod_human_face_detector.dat")
    with pytest.raises(DlibModelError, match="mmod_human_face_detector.dat.*not dlib's metric loss"):
        FaceIdentityNet.from_dlib_file(detector_file)
    with pytest.raises(DlibModelError, match=DLIB_SHAPE_PREDICTOR_68):
        FaceIdentityNet.from_dlib_file(default_dlib_model_path(DLIB_SHAPE_PREDICTOR_68))
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_dlib_model_path().read_bytes()[:3_000_000])
    with pytest.raises(DlibModelError, match="truncated.dat.*ends early"):
        FaceIdentityNet.from_dlib_file(truncated)


def test_matches_dlib_on_astronaut(net, dlib_models):
    skimage_data = pytest.importorskip("skimage.data")
    errors = compare_with_dlib(net, dlib_models, skimage_data.astronaut(), upsample=1)
    assert errors, "dlib found no face in skimage's astronaut"
    worst_network, worst_end_to_end = np.max(errors, axis=0)
    assert worst_network < TOLERANCE and worst_end_to_end < TOLERANCE


@pytest.mark.realdata
def test_matches_dlib_on_shared_stills(net, dlib_models):
    if not SHARED_IMAGES.is_dir():
        pytest.skip(f"shared real-dev stills not present at {SHARED_IMAGES}")
    from PIL import Image

    errors = []
    for path in sorted(SHARED_IMAGES.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            errors += compare_with_dlib(
                net, dlib_models, np.array(Image.open(path).convert("RGB")), upsample=0
            )
    assert len(errors) >= 5
    worst_network, worst_end_to_end = np.max(errors, axis=0)
    assert worst_network < TOLERANCE and worst_end_to_end < TOLERANCE


def test_gradient_reaches_image_and_csim(net, dlib_models):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    detector, predictor, _ = dlib_models
    shape = predictor(image, detector(image, 1)[0])
    landmarks = torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float32)[None]
    real = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    torch.manual_seed(0)
    fake = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    loss = identity_feature_loss(net, fake, real, landmarks)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(fake.grad).all()
    # the gradient lives on the face: inside the landmarks' bounding box, not in a far corner
    grad = fake.grad.abs().sum(1)[0]
    assert grad[150:230, 170:260].sum() > 0 and grad[400:, 400:].sum() == 0
    assert identity_feature_loss(net, real, real, landmarks).item() < 1e-6

    # CSIM: a face against itself is 1, against the noisy version lower, symmetric
    descriptors = face_descriptors(net, torch.cat([real, fake.detach()]), landmarks.repeat(2, 1, 1))
    same = csim(descriptors[:1], descriptors[:1])
    noisy = csim_from_images(net, real, landmarks, fake.detach(), landmarks)
    assert torch.allclose(same, torch.ones(1), atol=1e-6)
    assert 0 < noisy.item() < 0.999
    assert torch.allclose(noisy, csim(descriptors[1:], descriptors[:1]), atol=1e-6)
    with pytest.raises(ValueError, match="paired"):
        csim(descriptors, descriptors[:1])
