"""E, G (+P) and D (+W, w0, b): shapes, AdaIN slices, gradients, spectral norm, invariances."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import StandInFaceNetwork, random_images, tiny_model_config
from metahead.config import PRESETS, ModelConfig, preset
from metahead.models import Discriminator, Embedder, Generator, embed_person
from metahead.models.blocks import AdaIN, is_spectrally_normalised

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny() -> ModelConfig:
    return preset("tiny").model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_output_shapes_for_every_preset(name: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config(name) if name != "tiny" else tiny()
    size, n = cfg.image_size, cfg.embedding_dim
    x, y = random_images(2, size, 1), random_images(2, size, 2)
    embedder, generator, discriminator = Embedder(cfg), Generator(cfg), Discriminator(cfg, num_videos=5)
    with torch.no_grad():
        person_embedding, frame_embeddings = embed_person(embedder, x[None].expand(1, 2, -1, -1, -1), y[None])
        assert person_embedding.shape == (1, n) and frame_embeddings.shape == (1, 2, n)
        fake = generator(y, person_embedding.expand(2, -1))
        assert fake.shape == (2, 3, size, size)
        assert fake.abs().max() <= 1.0
        realism, features = discriminator(fake, y, torch.tensor([0, 4]))
    assert realism.shape == (2,)
    assert features[-1].shape == (
        2,
        n,
        cfg.discriminator_final_resolution,
        cfg.discriminator_final_resolution,
    )


def test_generator_up_path_widths_lab_and_mirror() -> None:
    """ "lab": the authors' FSTH generator's up blocks (512 @32², 256 @64², 128 @128², 64 @256² at
    paper-256); "mirror": the down path's widths."""
    from metahead.models.generator import up_channels_at

    lab = preset("paper-256").model
    mirror = dataclasses.replace(lab, generator_up_widths="mirror")
    assert [up_channels_at(lab, r) for r in (32, 64, 128, 256)] == [512, 256, 128, 64]
    assert [up_channels_at(mirror, r) for r in (32, 64, 128, 256)] == [256, 128, 64, 64]
    cfg = dataclasses.replace(tiny_model_config("paper-256", channels=32), generator_up_widths="lab")
    widths = [block.conv2.out_channels for block in Generator(cfg).up]
    assert widths == [up_channels_at(cfg, cfg.image_size // 2**i) for i in range(len(widths) - 1, -1, -1)]
    with pytest.raises(ValueError, match="generator_up_widths='wide'"):
        up_channels_at(dataclasses.replace(cfg, generator_up_widths="wide"), 32)


def test_generator_bilinear_upsampling_leaves_no_mosaic_and_skips_the_nearest_kernel() -> None:
    """model.generator_upsampling: "bilinear" changes G's up blocks only, keeps the fast and the reference ops
    equal (the fused stride-2 kernel is nearest upsampling's, so it is not used), and an untrained G's output
    is smooth across its 2/4/8-px grid where nearest's is not."""
    from metahead.evaluation.metrics import blockiness
    from metahead.models.blocks import use_reference_ops

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny(), image_size=32, generator_upsampling="bilinear")
    bilinear = Generator(cfg).eval()
    torch.manual_seed(0)
    nearest = Generator(dataclasses.replace(cfg, generator_upsampling="nearest")).eval()
    assert {b.upsampling for b in bilinear.up} == {"bilinear"}
    assert all(b.upsampling == "nearest" for b in bilinear.bottleneck)  # no resampling there anyway
    y, e = random_images(2, 32, 1), torch.randn(2, cfg.embedding_dim)
    with torch.no_grad():
        fast = bilinear(y.contiguous(memory_format=torch.channels_last), e)
        for block in bilinear.up:
            block.freeze_resampling_kernel()
            assert block.resampling_kernel is None
        reference = use_reference_ops(bilinear)(y, e)
        assert torch.allclose(fast, reference, atol=1e-5)
        box = torch.tensor([[2.0, 2.0], [29.0, 29.0]]).repeat(1, 34, 1)
        smooth = blockiness((bilinear(y, e) + 1) / 2, box.expand(2, -1, -1))
        blocky = blockiness((nearest(y, e) + 1) / 2, box.expand(2, -1, -1))
    assert (blocky > smooth).all(), (blocky, smooth)
    with pytest.raises(ValueError, match="generator_upsampling='bicubic'"):
        Generator(dataclasses.replace(cfg, generator_upsampling="bicubic"))


def test_generator_skips_feed_the_encoder_and_the_landmark_image_to_the_decoder() -> None:
    """model.generator_skips: one skip per up block (1x1 from the encoder's activation at that resolution, 3x3
    from the landmark image at full resolution); off, G is the paper's (no skip modules); on, both skips are
    on the output's graph and the render path's folded copy (spectral norm folded) has them."""
    from metahead.avatar.render import fold_spectral_norm
    from metahead.config import ExperimentConfig

    cfg = dataclasses.replace(tiny(), generator_skips=True)  # 32², bottleneck 8: up blocks to 16² and 32²
    torch.manual_seed(0)
    generator = Generator(cfg).eval()
    assert len(Generator(tiny()).skips) == 0
    assert [(k, m.in_channels, m.out_channels, m.kernel_size) for k, m in generator.skips.items()] == [
        ("0", generator.down.widths[0], generator.up[0].conv2.out_channels, (1, 1)),
        ("1", 3, generator.up[1].conv2.out_channels, (3, 3)),
    ]
    y, e = random_images(2, 32, 1), torch.randn(2, cfg.embedding_dim)
    with torch.no_grad():
        out = generator(y, e)
        folded = fold_spectral_norm(generator, ExperimentConfig(model=cfg))
        assert torch.allclose(folded(y, adain_params=generator.project(e)), out, atol=1e-5)
    generator.train()
    generator(y, e).square().mean().backward()
    for skip in generator.skips.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in skip.parameters())


def test_adain_slices_are_disjoint_cover_psi_and_match_projection() -> None:
    generator = Generator(tiny())
    layers = generator.adain_layers()
    # bottleneck blocks and up blocks have two AdaIN layers each, plus the one before the output conv
    assert len(layers) == 2 * (len(generator.bottleneck) + len(generator.up)) + 1
    assert generator.num_adain_params == sum(2 * m.channels for _, m in layers)
    assert generator.num_adain_params == generator.projection.out_features
    covered = torch.zeros(generator.num_adain_params, dtype=torch.int64)
    for _, start, stop in generator.adain_layout():
        covered[start:stop] += 1
    assert bool((covered == 1).all()), "every entry of ψ̂ belongs to exactly one AdaIN layer"


def test_every_adain_layer_reads_its_own_slice() -> None:
    generator = Generator(tiny())
    psi = torch.randn(2, generator.num_adain_params)
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: AdaIN, inputs, output) -> None:
            x, params = inputs
            scale, bias = (
                params[:, module.offset : module.offset + module.channels],
                params[:, module.offset + module.channels : module.offset + 2 * module.channels],
            )
            expected = nn.functional.instance_norm(x) * scale[..., None, None] + bias[..., None, None]
            torch.testing.assert_close(output, expected)
            seen[name] = params

        return hook

    for name, layer in generator.adain_layers():
        layer.register_forward_hook(record(name))
    generator(random_images(2, 32), adain_params=psi)
    assert set(seen) == {name for name, _ in generator.adain_layers()}
    # Changing one layer's slice changes the output; the slices are independent parameters.
    name, start, stop = generator.adain_layout()[0]
    bumped = psi.clone()
    bumped[:, start:stop] += 1.0
    with torch.no_grad():
        assert not torch.allclose(
            generator(random_images(2, 32), adain_params=psi),
            generator(random_images(2, 32), adain_params=bumped),
        )


def test_generator_from_adain_params_equals_generator_from_embedding() -> None:
    torch.manual_seed(0)
    generator = Generator(tiny()).eval()
    person_embedding = torch.randn(3, tiny().embedding_dim)
    landmarks = random_images(3, 32)
    with torch.no_grad():
        from_embedding = generator(landmarks, person_embedding=person_embedding)
        psi = generator.project(person_embedding)
        from_params = generator(landmarks, adain_params=psi)
        # one stored ψ' broadcast over a batch of poses (rendering with constants)
        broadcast = generator(landmarks, adain_params=psi[:1])
        first_only = generator(landmarks, person_embedding=person_embedding[:1].expand(3, -1))
    torch.testing.assert_close(from_embedding, from_params)
    torch.testing.assert_close(broadcast, first_only)
    with pytest.raises(ValueError, match="exactly one"):
        generator(landmarks)
    with pytest.raises(ValueError, match="exactly one"):
        generator(landmarks, person_embedding=person_embedding, adain_params=psi)
    with pytest.raises(ValueError, match="shape"):
        generator(landmarks, adain_params=psi[:, :-1])


def test_projection_starts_at_identity_adain() -> None:
    generator = Generator(tiny())
    torch.testing.assert_close(
        generator.project(torch.zeros(1, tiny().embedding_dim))[0], generator.identity_adain_params()
    )


def test_embedder_is_invariant_to_frame_order() -> None:
    torch.manual_seed(0)
    embedder = Embedder(tiny()).eval()
    frames, landmarks = (
        random_images(8, 32, 1).view(2, 4, 3, 32, 32),
        random_images(8, 32, 2).view(2, 4, 3, 32, 32),
    )
    permutation = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        person, per_frame = embed_person(embedder, frames, landmarks)
        person_perm, per_frame_perm = embed_person(
            embedder, frames[:, permutation], landmarks[:, permutation]
        )
        single = embedder(frames[1, 2:3], landmarks[1, 2:3])
    torch.testing.assert_close(person, person_perm)
    torch.testing.assert_close(per_frame[:, permutation], per_frame_perm)
    torch.testing.assert_close(per_frame[1, 2:3], single, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(person[0], person[1])
    with pytest.raises(ValueError, match="B, K, 3, H, W"):
        embed_person(embedder, frames[0], landmarks[0])


def test_spectral_norm_on_every_conv_and_linear() -> None:
    cfg = tiny()
    networks = {"E": Embedder(cfg), "G": Generator(cfg), "D": Discriminator(cfg, 3)}
    for name, net in networks.items():
        layers = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert layers, name
        missing = [n for n, m in layers if not is_spectrally_normalised(m)]
        assert not missing, f"{name}: no spectral norm on {missing}"
    assert is_spectrally_normalised(networks["G"].projection)
    plain = Generator(dataclasses.replace(cfg, spectral_norm=False))
    assert not any(is_spectrally_normalised(m) for m in plain.modules())


def test_gradients_reach_embedder_projection_w_w0_and_b() -> None:
    torch.manual_seed(0)
    cfg = tiny()
    embedder, generator, discriminator = Embedder(cfg), Generator(cfg), Discriminator(cfg, num_videos=6)
    frames, landmarks = (
        random_images(4, 32, 1).view(2, 2, 3, 32, 32),
        random_images(4, 32, 2).view(2, 2, 3, 32, 32),
    )
    video_index = torch.tensor([1, 4])
    person, _ = embed_person(embedder, frames, landmarks)
    fake = generator(landmarks[:, 0], person)
    realism, _ = discriminator(fake, landmarks[:, 0], video_index)
    realism.sum().backward()
    for name, net in (("E", embedder), ("G", generator)):
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient"
    assert generator.projection.parametrizations.weight.original.grad.abs().sum() > 0
    assert generator.projection.bias.grad.abs().sum() > 0
    assert discriminator.w0.grad.abs().sum() > 0
    assert discriminator.b.grad.item() == pytest.approx(2.0)
    w_grad = discriminator.video_embeddings.weight.grad
    touched = w_grad.abs().sum(1) > 0
    assert touched.tolist() == [False, True, False, False, True, False]


def test_sparse_video_embedding_gradient_touches_only_episode_rows() -> None:
    discriminator = Discriminator(tiny(), num_videos=1000, sparse_grad=True)
    realism, _ = discriminator(random_images(2, 32, 1), random_images(2, 32, 2), torch.tensor([7, 900]))
    realism.sum().backward()
    grad = discriminator.video_embeddings.weight.grad
    assert grad.is_sparse
    assert sorted(grad.coalesce().indices()[0].tolist()) == [7, 900]


def test_forward_with_embedding_matches_forward() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(tiny(), num_videos=4).eval()
    x, y = random_images(2, 32, 1), random_images(2, 32, 2)
    index = torch.tensor([3, 0])
    with torch.no_grad():
        realism, features = discriminator(x, y, index)
        w_prime = discriminator.video_embeddings(index) + discriminator.w0
        realism_free, features_free = discriminator.forward_with_embedding(x, y, w_prime)
        vector, _ = discriminator.features_and_vector(x, y)
    torch.testing.assert_close(realism, realism_free)
    torch.testing.assert_close(
        realism,
        vector @ discriminator.w0 + (vector * discriminator.video_embeddings(index)).sum(1) + discriminator.b,
    )
    assert len(features) == len(features_free)


def test_discriminator_returns_one_feature_per_residual_block() -> None:
    for cfg in (tiny(), tiny_model_config("cpu-64")):
        discriminator = Discriminator(cfg, 2)
        with torch.no_grad():
            _, features = discriminator(
                random_images(1, cfg.image_size), random_images(1, cfg.image_size), torch.tensor([0])
            )
        # down blocks image_size → final resolution, plus the extra block at the final resolution
        expected = (cfg.image_size // cfg.discriminator_final_resolution).bit_length() - 1 + 1
        assert len(features) == expected == len(discriminator.down.blocks) + 1


def test_bf16_autocast_and_channels_last_run() -> None:
    torch.manual_seed(0)
    cfg = tiny()
    generator, discriminator = Generator(cfg), Discriminator(cfg, 2)
    generator.to(memory_format=torch.channels_last)
    discriminator.to(memory_format=torch.channels_last)
    y = random_images(2, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = generator(y, torch.randn(2, cfg.embedding_dim))
        realism, _ = discriminator(fake, y, torch.tensor([0, 1]))
    realism.float().sum().backward()
    assert torch.isfinite(fake.float()).all() and torch.isfinite(realism.float()).all()


def test_attention_resolution_must_be_on_the_path() -> None:
    with pytest.raises(ValueError, match="attention_up_resolution"):
        Generator(dataclasses.replace(tiny(), attention_up_resolution=64))
    with pytest.raises(ValueError, match="attention_down_resolution"):
        Embedder(dataclasses.replace(tiny(), attention_down_resolution=3))
    no_attention = Generator(
        dataclasses.replace(tiny(), attention_up_resolution=0, attention_down_resolution=0)
    )
    assert len(no_attention.up_attention) == 0 and len(no_attention.down.attention) == 0


def test_identity_prior_starts_at_zero_learns_a_projection_and_keeps_the_face_network_frozen() -> None:
    cfg = dataclasses.replace(tiny(), identity_prior="dlib")
    face_network = StandInFaceNetwork()
    torch.manual_seed(0)
    plain = Embedder(tiny()).eval()  # eval: spectral norm's power iteration stays put between calls
    torch.manual_seed(0)
    embedder = Embedder(cfg, face_network=face_network).eval()
    frames, landmarks = random_images(4, 32, 1), random_images(4, 32, 2)
    # A new model with the prior embeds exactly as one without it.
    torch.testing.assert_close(embedder(frames, landmarks), plain(frames, landmarks))
    person, _ = embed_person(embedder, frames.view(2, 2, 3, 32, 32), landmarks.view(2, 2, 3, 32, 32))
    person.square().sum().backward()
    prior = embedder.identity_prior
    assert prior.projection.weight.grad.abs().sum() > 0  # the projection learns from the first step
    assert all(p.grad is None and not p.requires_grad for p in prior.network.parameters())
    # Once learned, the projection adds the frames' descriptors: a different face, a different embedding.
    with torch.no_grad():
        prior.projection.weight.normal_()
        descriptors = prior.descriptors(frames)
        added = embedder(frames, landmarks) - plain(frames, landmarks)
    torch.testing.assert_close(added, descriptors @ prior.projection.weight.T, rtol=1e-4, atol=1e-4)
    assert descriptors.norm(dim=1).allclose(torch.full((4,), 128**0.5))
    assert not torch.allclose(added[0], added[1])
    with pytest.raises(ValueError, match="identity_prior"):
        Embedder(dataclasses.replace(tiny(), identity_prior="arcface"))
