"""L_CNT, L_ADV, L_MCH, L_DSC: values on known inputs, configuration errors, and a loss that falls."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metahead.config import LossConfig, preset
from metahead.losses import (
    VGG19_ENV,
    ContentLoss,
    IdentityFeatureLoss,
    adversarial_loss,
    discriminator_loss,
    laplacian_l1,
    matching_loss,
    multiscale_l1,
)
from metahead.models import Generator, perceptual

pytestmark = pytest.mark.usefixtures("one_thread")


class StandInFaceNet(nn.Module):
    """A tiny stand-in with FaceIdentityNet's interface: features(chips 0..255) -> (blocks, descriptor)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 5)

    def features(self, chips: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        a = F.relu(self.conv1(chips / 255.0))
        b = F.relu(self.conv2(a))
        return [a, b], self.fc(b.mean((2, 3)))


def crop_chips(images: torch.Tensor, landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """Stand-in aligner: the landmarks' bounding box (square), resized; differentiable in images."""
    lo, hi = landmarks.amin(1), landmarks.amax(1)
    centre, half = (lo + hi) / 2, (hi - lo).amax(1, keepdim=True) / 2 * 1.25
    h, w = images.shape[-2:]
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = half[:, 0] * 2 / w, half[:, 0] * 2 / h
    theta[:, 0, 2], theta[:, 1, 2] = centre[:, 0] * 2 / w - 1, centre[:, 1] * 2 / h - 1
    grid = F.affine_grid(theta, (images.shape[0], 3, size, size), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


def stand_in_identity() -> IdentityFeatureLoss:
    return IdentityFeatureLoss(StandInFaceNet(), crop_chips, chip_size=24)


def offline_cfg(**kw) -> LossConfig:
    return LossConfig(identity_network="none", allow_offline=True, **kw)


def face_landmarks(batch: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return size * (0.3 + 0.4 * torch.rand(batch, 68, 2, generator=g))


def test_hinge_discriminator_loss_on_known_values() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])  # max(0, 1 - r): 0, 0.5, 2  -> mean 2.5/3
    fake = torch.tensor([-3.0, 0.0, 1.0])  # max(0, 1 + r̂): 0, 1, 2  -> mean 1
    total, terms = discriminator_loss(real, fake)
    assert terms["real"].item() == pytest.approx(2.5 / 3)
    assert terms["fake"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(2.5 / 3 + 1.0)
    assert discriminator_loss(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -9.0]))[0].item() == 0.0


def test_adversarial_loss_on_known_values() -> None:
    fake_realism = torch.tensor([1.0, 3.0])
    real_features = [torch.zeros(2, 1, 2, 2), torch.ones(2, 3)]
    fake_features = [
        torch.full((2, 1, 2, 2), 0.5, requires_grad=True),
        torch.full((2, 3), 3.0, requires_grad=True),
    ]
    total, terms = adversarial_loss(fake_realism, real_features, fake_features, feature_matching_weight=10.0)
    assert terms["adversarial"].item() == pytest.approx(-2.0)
    assert terms["feature_matching"].item() == pytest.approx((0.5 + 2.0) / 2)  # mean over blocks of L1
    assert total.item() == pytest.approx(-2.0 + 10 * 1.25)
    # real features are constants: feature matching trains the fake side only
    real_param = torch.zeros(2, 3, requires_grad=True)
    total, _ = adversarial_loss(fake_realism, [real_param], [fake_features[1]], 10.0)
    total.backward()
    assert real_param.grad is None and fake_features[1].grad is not None


def test_matching_loss_on_known_values() -> None:
    frames = torch.tensor([[[1.0, 2.0], [3.0, 2.0]]], requires_grad=True)  # (B=1, K=2, N=2)
    video = torch.tensor([[1.0, 1.0]], requires_grad=True)
    loss = matching_loss(frames, video)
    assert loss.item() == pytest.approx((0 + 1 + 2 + 1) / 4)
    loss.backward()
    assert video.grad.abs().sum() > 0 and frames.grad.abs().sum() > 0  # both E and W learn from L_MCH
    with pytest.raises(ValueError, match="B, K, N"):
        matching_loss(frames[0], video)


def test_multiscale_l1() -> None:
    fake, real = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    real[..., ::2, :] = 1.0  # stripes: L1 0.5 at full res, 0.5 after pooling (pooled stripes average 0.5)
    assert multiscale_l1(fake, real, 1).item() == pytest.approx(0.5)
    assert multiscale_l1(fake, real, 3).item() == pytest.approx(0.5)
    real2 = torch.zeros(1, 3, 8, 8)
    real2[..., ::2, ::2], real2[..., 1::2, 1::2] = 1.0, -1.0  # cancels on pooling
    assert multiscale_l1(fake, real2, 2).item() == pytest.approx((0.5 + 0.0) / 2)


def test_laplacian_l1_scores_lost_detail_and_ignores_a_shift_in_brightness() -> None:
    """The band-pass levels: a constant offset leaves them unchanged (0, where pixel L1 is large), a blur
    loses them (> 0, and more than the pixel L1 counts it), and one level of a 2-px checkerboard is the
    checkerboard itself."""
    torch.manual_seed(0)
    sharp = torch.rand(2, 3, 32, 32) * 2 - 1
    brighter = sharp + 0.3
    assert laplacian_l1(brighter, sharp, 3).item() == pytest.approx(0.0, abs=1e-6)
    assert multiscale_l1(brighter, sharp, 3).item() == pytest.approx(0.3, abs=1e-5)
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    assert laplacian_l1(blurred, sharp, 3) > 0.5 * multiscale_l1(blurred, sharp, 3) > 0
    checker = torch.zeros(1, 1, 8, 8)
    checker[..., ::2, ::2], checker[..., 1::2, 1::2] = 1.0, 1.0
    checker = checker * 2 - 1  # ±1, mean 0: pooling gives 0, so the band is the checkerboard
    assert laplacian_l1(checker, torch.zeros_like(checker), 1).item() == pytest.approx(1.0)


def test_offline_content_loss_adds_the_laplacian_term_only_when_weighted() -> None:
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    plain = ContentLoss(LossConfig(allow_offline=True, identity_network="none"))
    detail = ContentLoss(LossConfig(allow_offline=True, identity_network="none", laplacian_weight=5.0))
    total_plain, terms_plain = plain(fake, real)
    total_detail, terms_detail = detail(fake, real)
    assert "laplacian" not in terms_plain and "laplacian" not in plain.record["terms"]
    assert "Laplacian" in detail.description and detail.record["terms"]["laplacian"]["weight"] == 5.0
    assert total_detail.item() == pytest.approx(total_plain.item() + 5.0 * terms_detail["laplacian"].item())


def test_offline_content_loss_terms_and_description(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="metahead.losses"):
        loss = ContentLoss(LossConfig(allow_offline=True), identity_loss=stand_in_identity())
    assert loss.offline and "offline default" in caplog.text
    assert "pixel" in loss.description and "identity" in loss.description
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (real + 0.2 * torch.randn_like(real)).clamp(-1, 1)
    landmarks = face_landmarks(2, 32)
    total, terms = loss(fake, real)
    assert set(terms) == {"pixel"}
    total_lm, terms_lm = loss(fake, real, real_landmarks=landmarks)
    assert set(terms_lm) == {"pixel", "identity"} and terms_lm["identity"] > 0
    weight = LossConfig().identity_weight
    assert total_lm.item() == pytest.approx((terms_lm["pixel"] + weight * terms_lm["identity"]).item())
    same, same_terms = loss(real, real, real_landmarks=landmarks)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    no_identity = ContentLoss(offline_cfg())
    assert no_identity.identity is None and "identity" not in no_identity.description


def test_configured_but_missing_weights_fail_at_construction(tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "vgg19_missing.pth"
    with pytest.raises(FileNotFoundError, match="vgg19_missing.pth"):
        ContentLoss(offline_cfg(vgg19_weights_path=str(missing)))
    monkeypatch.setenv(VGG19_ENV, str(tmp_path / "from_env.pth"))
    with pytest.raises(FileNotFoundError, match=rf"from_env\.pth.*{VGG19_ENV}"):
        ContentLoss(offline_cfg())
    with pytest.raises(FileNotFoundError, match="face_missing.pth"):
        monkeypatch.delenv(VGG19_ENV)
        ContentLoss(offline_cfg(vggface_weights_path=str(tmp_path / "face_missing.pth")))


def test_content_loss_with_vgg_weights(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    torch.save(perceptual.vgg19().state_dict(), tmp_path / "vgg19.pth")
    torch.save(perceptual.vggface_state_dict_caffe_names(perceptual.vggface()), tmp_path / "vggface.pth")
    monkeypatch.setenv("METAHEAD_VGGFACE_WEIGHTS", str(tmp_path / "vggface.pth"))
    loss = ContentLoss(LossConfig(vgg19_weights_path=str(tmp_path / "vgg19.pth")))
    assert not loss.offline and loss.identity is None
    assert "vgg19" in loss.description and "vggface" in loss.description and "pixel" not in loss.description
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    total, terms = loss(fake, real)
    assert set(terms) == {"vgg19", "vggface"}
    assert total.item() == pytest.approx((1e-2 * terms["vgg19"] + 2e-3 * terms["vggface"]).item(), rel=1e-5)
    total.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    assert loss(real, real)[0].item() == pytest.approx(0.0, abs=1e-6)


def test_content_loss_falls_when_fitting_a_tiny_generator() -> None:
    torch.manual_seed(0)
    cfg = preset("tiny").model
    generator = Generator(cfg)
    loss_fn = ContentLoss(LossConfig(allow_offline=True), identity_loss=stand_in_identity())
    target = torch.zeros(1, 3, 32, 32)
    target[:, 0, 8:24, 8:24] = 0.8  # a red square on grey
    target[:, 1:] = -0.2
    landmark_image = -torch.ones(1, 3, 32, 32)
    landmark_image[:, :, 10:22, 15:17] = 1.0
    landmarks = face_landmarks(1, 32)
    person_embedding = torch.zeros(1, cfg.embedding_dim, requires_grad=True)
    optimiser = torch.optim.Adam([*generator.parameters(), person_embedding], lr=2e-3)
    losses = []
    for _ in range(25):
        fake = generator(landmark_image, person_embedding)
        total, _ = loss_fn(fake, target, real_landmarks=landmarks)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert losses[-1] < 0.4 * losses[0], losses


def test_default_offline_loss_uses_dlib_identity_network() -> None:
    from metahead.models.face_identity import default_dlib_model_path

    try:
        default_dlib_model_path()
    except (FileNotFoundError, ValueError) as err:
        pytest.skip(f"dlib face-recognition model not available: {err}")
    loss = ContentLoss(LossConfig(allow_offline=True))
    assert type(loss.identity.network).__name__ == "FaceIdentityNet"
    size = 64
    angle = torch.linspace(0, 6.28, 68)
    landmarks = torch.stack([size / 2 + size * 0.3 * angle.cos(), size / 2 + size * 0.35 * angle.sin()], -1)[
        None
    ]
    real = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    total, terms = loss(fake, real, real_landmarks=landmarks)
    assert set(terms) == {"pixel", "identity"} and terms["identity"] > 0
    total.backward()
    assert fake.grad.abs().sum() > 0


def test_paper_presets_refuse_to_train_without_vgg_weights(monkeypatch) -> None:
    for name in ("METAHEAD_VGG19_WEIGHTS", "METAHEAD_VGGFACE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("paper-256", "paper-256-v2"):
        with pytest.raises(
            ValueError, match=r"METAHEAD_VGG19_WEIGHTS.*loss.vgg19_weights_path.*allow_offline"
        ):
            ContentLoss(preset(name).loss, identity_loss=stand_in_identity())
    # The explicit switch: the offline loss, as the CPU presets use it.
    cfg = preset("paper-256").loss
    cfg.allow_offline = True
    assert ContentLoss(cfg, identity_loss=stand_in_identity()).offline


def test_resolved_loss_records_terms_weights_and_checksums(tmp_path: Path, monkeypatch) -> None:
    from metahead.losses import content_loss_differences, file_sha256

    monkeypatch.delenv("METAHEAD_VGGFACE_WEIGHTS", raising=False)
    offline = ContentLoss(offline_cfg()).record
    assert offline["terms"] == {"pixel": {"weight": 1.0, "scales": 3}} and offline["sha256"] == {}
    torch.save(perceptual.vgg19().state_dict(), tmp_path / "vgg19.pth")
    vgg = ContentLoss(LossConfig(vgg19_weights_path=str(tmp_path / "vgg19.pth"))).record
    assert vgg["terms"] == {"vgg19": {"weight": 1e-2, "input": "caffe"}}
    assert vgg["sha256"] == {"vgg19": file_sha256(tmp_path / "vgg19.pth")}
    # The same file elsewhere is the same loss; another weight or another file is not.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "vgg19.pth").write_bytes((tmp_path / "vgg19.pth").read_bytes())
    moved = ContentLoss(LossConfig(vgg19_weights_path=str(tmp_path / "elsewhere" / "vgg19.pth"))).record
    assert content_loss_differences(vgg, moved) == []
    heavier = ContentLoss(
        LossConfig(vgg19_weights_path=str(tmp_path / "vgg19.pth"), vgg19_weight=0.15)
    ).record
    before, after = (
        "{'vgg19': {'weight': 0.01, 'input': 'caffe'}}",
        "{'vgg19': {'weight': 0.15, 'input': 'caffe'}}",
    )
    assert content_loss_differences(vgg, heavier) == [f"terms: {before} -> {after}"]
    differences = content_loss_differences(vgg, offline)
    assert [d.split(":")[0] for d in differences] == ["sha256", "terms"]
