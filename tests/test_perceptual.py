"""VGG19 / VGGFace: standard key layouts round-trip through files; wrong files fail clearly; input styles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import random_images
from metahead.models import perceptual

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def random_vgg19() -> perceptual.VGGFeatures:
    torch.manual_seed(0)
    return perceptual.vgg19("caffe")


@pytest.fixture(scope="module")
def random_vggface() -> perceptual.VGGFeatures:
    torch.manual_seed(1)
    return perceptual.vggface("caffe")


def small_images(seed: int = 0) -> torch.Tensor:
    return random_images(1, 32, seed)


def test_layer_indices_are_the_relus_after_the_paper_convs(random_vgg19, random_vggface) -> None:
    names19 = [type(random_vgg19.features[i]).__name__ for i in perceptual.VGG19_LAYERS]
    assert names19 == ["ReLU"] * 5
    conv_indices19 = [i - 1 for i in perceptual.VGG19_LAYERS]
    assert conv_indices19 == [0, 5, 10, 19, 28]  # conv1_1, conv2_1, conv3_1, conv4_1, conv5_1
    conv_indices_face = [i - 1 for i in perceptual.VGGFACE_LAYERS]
    assert conv_indices_face == [0, 5, 10, 17, 24]
    assert [perceptual.vggface_caffe_key(f"features.{i}.weight") for i in conv_indices_face] == [
        "conv1_1.weight", "conv2_1.weight", "conv3_1.weight", "conv4_1.weight", "conv5_1.weight"
    ]  # fmt: skip
    # truncated after relu5_1: no conv5_2 and later
    assert len(random_vgg19.features) == 30 and len(random_vggface.features) == 26
    features = random_vgg19(small_images())
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512]


def test_vgg19_torchvision_layout_round_trip(tmp_path: Path, random_vgg19) -> None:
    state = random_vgg19.state_dict()
    assert "features.0.weight" in state and "features.28.bias" in state
    state["classifier.6.weight"] = torch.zeros(10, 4)  # classifier keys of a full file are ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loaded = perceptual.load_vgg19(path, "caffe")
    x = small_images()
    with torch.no_grad():
        for a, b in zip(random_vgg19(x), loaded(x)):
            torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_vggface_caffe_names_and_torchvision_layout_round_trip(tmp_path: Path, random_vggface) -> None:
    caffe_state = perceptual.vggface_state_dict_caffe_names(random_vggface)
    assert "conv1_1.weight" in caffe_state and "conv5_1.bias" in caffe_state
    caffe_state["fc8.weight"] = torch.zeros(3, 3)
    x = small_images(3)
    with torch.no_grad():
        expected = random_vggface(x)
    for name, state in (("caffe.pth", caffe_state), ("tv.pth", random_vggface.state_dict())):
        torch.save(state, tmp_path / name)
        loaded = perceptual.load_vggface(tmp_path / name, "caffe")
        with torch.no_grad():
            for a, b in zip(expected, loaded(x)):
                torch.testing.assert_close(a, b)
    # a state dict wrapped as {"state_dict": ...} and a safetensors file work too
    torch.save({"state_dict": caffe_state}, tmp_path / "wrapped.pth")
    perceptual.load_vggface(tmp_path / "wrapped.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in caffe_state.items()}, str(tmp_path / "face.safetensors"))
    perceptual.load_vggface(tmp_path / "face.safetensors")


def test_loaders_reject_wrong_files(tmp_path: Path, random_vgg19, random_vggface) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        perceptual.load_vgg19(text)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        perceptual.load_vgg19(tmp_path / "absent.pth")
    # VGGFace's file under the VGG19 loader: layouts differ (conv3_4 missing / shapes differ)
    face = tmp_path / "face.pth"
    torch.save(random_vggface.state_dict(), face)
    with pytest.raises(ValueError, match=r"face\.pth.*VGG19"):
        perceptual.load_vgg19(face)
    # VGG19's file under the VGGFace loader: features.17 is a ReLU in VGG19, a conv in VGG16
    vgg = tmp_path / "vgg19.pth"
    torch.save(random_vgg19.state_dict(), vgg)
    with pytest.raises(ValueError, match=r"vgg19\.pth.*VGGFace"):
        perceptual.load_vggface(vgg)
    # wrong shape
    state = random_vgg19.state_dict()
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(ValueError, match=r"bad_shape\.pth.*features\.0\.weight.*shape"):
        perceptual.load_vgg19(tmp_path / "bad_shape.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth"):
        perceptual.load_vgg19(tmp_path / "list.pth")


def test_input_conventions() -> None:
    # a pure-red image in [-1, 1]: R = 1, G = B = -1
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    caffe = perceptual.vgg19("caffe").preprocess(red).flatten()
    torch.testing.assert_close(caffe, torch.tensor([0 - 103.939, 0 - 116.779, 255 - 123.68]))  # BGR 0..255
    tv = perceptual.vgg19("torchvision").preprocess(red).flatten()
    torch.testing.assert_close(tv, torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    face = perceptual.vggface("caffe").preprocess(red).flatten()
    torch.testing.assert_close(face, torch.tensor([-93.5940, -104.7624, 255 - 129.1863]))
    matconvnet = perceptual.vggface("matconvnet").preprocess(red).flatten()
    torch.testing.assert_close(matconvnet, torch.tensor([255 - 129.1863, -104.7624, -93.5940]))
    with pytest.raises(ValueError, match="VGGFace input convention"):
        perceptual.vggface("torchvision")
    with pytest.raises(ValueError, match="VGG19 input convention"):
        perceptual.vgg19("bgr")
