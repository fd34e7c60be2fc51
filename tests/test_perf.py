"""metahead.perf helpers, and the fast ops of models.blocks: they compute what the plain formulation does."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import open_attention, random_images, tiny_model_config
from metahead import perf
from metahead.config import ModelConfig
from metahead.models import Discriminator, Embedder, Generator, embed_person
from metahead.models.blocks import (
    conv2d,
    conv3x3_avg_pool,
    instance_norm_affine,
    is_spectrally_normalised,
    upsample_conv3x3,
    use_reference_ops,
)

CL = torch.channels_last


pytestmark = pytest.mark.usefixtures("one_thread")


def small_64() -> ModelConfig:
    """cpu-64's structure (64² images: the stride-2 resampling convs run) with few channels; attention
    channels above FLASH_ATTENTION_MAX_CHANNELS would need a wide network, so both attention paths are
    covered by the two widths in test_attention_paths_match_sdpa."""
    return tiny_model_config("cpu-64", channels=16)


# --- helpers ------------------------------------------------------------------------------------------------


def test_autocast_context_gives_bf16_matmuls_on_cpu() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with perf.autocast_context("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with perf.autocast_context("none", "cpu"):
        assert (a @ b).dtype == torch.float32
    with perf.autocast_context("auto", "cpu"):
        expected = torch.bfloat16 if perf.cpu_has_native_bf16() else torch.float32
        assert (a @ b).dtype == expected
    with pytest.raises(ValueError, match="amp"):
        perf.autocast_context("fp16", "cpu")


def test_to_channels_last_converts_weights_and_keeps_outputs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 10, 10)
    expected = net(x)
    assert perf.to_channels_last(net) is net
    assert all(p.is_contiguous(memory_format=CL) for p in net.parameters() if p.ndim == 4)
    out = net(perf.channels_last_input(x))
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, expected)


def test_maybe_compile_off_is_a_no_op() -> None:
    net = nn.Linear(3, 2)
    assert perf.maybe_compile(net, False) is net and not perf.is_compiled(net)


class TinyNet(nn.Module):
    """Our own module: torch.compile traces frames of user code (torch.nn's own modules are skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(x)) * 2


def test_maybe_compile_falls_back_to_eager_when_compilation_fails(caplog) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    x = torch.randn(3, 4)
    expected = net(x)
    calls = []

    def broken_backend(graph_module, example_inputs):
        calls.append(graph_module)
        raise RuntimeError("no compiler here")

    compiled = perf.maybe_compile(net, True, backend=broken_backend)
    assert compiled is net and perf.is_compiled(net)
    with caplog.at_level(logging.WARNING, logger="metahead.perf"):
        out = net(x)
    torch.testing.assert_close(out, expected)
    assert calls, "the backend was asked to compile"
    assert "running it eager" in caplog.text
    assert not perf.is_compiled(net)  # later calls go straight to eager
    torch.testing.assert_close(net(x), expected)
    assert list(net.state_dict()) == ["layer.weight", "layer.bias"]  # same keys: compiled in place


def test_tuned_allocator_env() -> None:
    assert perf.tuned_allocator_env({}) == perf.GLIBC_TUNING
    # a value the user set is kept; another allocator preloaded, or the opt-out: nothing added
    assert perf.tuned_allocator_env({"MALLOC_ARENA_MAX": "8"}) == {
        k: v for k, v in perf.GLIBC_TUNING.items() if k != "MALLOC_ARENA_MAX"
    }
    assert perf.tuned_allocator_env({"LD_PRELOAD": "/a/libjemalloc.so.2"}) == {}
    assert perf.tuned_allocator_env({"LD_PRELOAD": "/a/libtcmalloc.so.4"}) == {}
    assert perf.tuned_allocator_env({perf.NO_TUNED_ALLOCATOR_ENV: "1"}) == {}
    assert perf.tuned_thread_env({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert perf.tuned_thread_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert perf.allocator_in_use()["allocator"] in ("glibc", "jemalloc", "tcmalloc", "unknown")


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert perf.set_threads(1) == 1
        assert perf.set_threads(None) == perf.available_cores()
    finally:
        torch.set_num_threads(before)


# --- fast ops == reference ops ------------------------------------------------------------------------------


def test_instance_norm_affine_matches_instance_norm_in_any_layout() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 7) * 4 + 2
    scale, shift = torch.randn(3, 5), torch.randn(1, 5)
    expected = F.instance_norm(x) * scale[..., None, None] + shift[..., None, None]
    torch.testing.assert_close(instance_norm_affine(x, scale, shift), expected)
    out = instance_norm_affine(x.contiguous(memory_format=CL), scale, shift)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, expected)
    low = instance_norm_affine(x.bfloat16(), scale, shift)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_stride_two_resampling_convs_equal_conv_with_pooling_or_upsampling(layout) -> None:
    torch.manual_seed(0)
    conv = conv2d(6, 5, 3, spectral_norm=False)
    x = torch.randn(2, 6, 12, 12).contiguous(memory_format=layout)
    torch.testing.assert_close(conv3x3_avg_pool(conv, x), F.avg_pool2d(conv(x), 2))
    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(upsample_conv3x3(conv, x), conv(up), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [16, 48, 128])  # padded flash kernel / either / two matmuls
def test_attention_paths_match_sdpa(channels: int) -> None:
    from metahead.models.blocks import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(channels).eval()
    open_attention(attention)
    x = torch.randn(2, channels, 8, 8).contiguous(memory_format=CL).requires_grad_()
    fast = attention(x)
    (fast_grad,) = torch.autograd.grad(fast.square().sum(), x)
    with torch.no_grad():
        fast_no_grad = attention(x)
    use_reference_ops(attention)
    expected = attention(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(fast, expected)
    torch.testing.assert_close(fast_no_grad, expected.detach())
    torch.testing.assert_close(fast_grad, expected_grad, rtol=1e-4, atol=1e-4)


def test_fast_ops_match_reference_ops_in_e_g_d_forward_and_backward() -> None:
    torch.manual_seed(0)
    cfg = small_64()
    nets = [Embedder(cfg), Generator(cfg), Discriminator(cfg, 3)]
    for net in nets:
        open_attention(net)
        perf.to_channels_last(net)
    embedder, generator, discriminator = nets
    x = random_images(2, 64, 1).view(1, 2, 3, 64, 64)
    y = random_images(2, 64, 2).view(1, 2, 3, 64, 64)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        for net in nets:
            net.zero_grad(set_to_none=True)
        person, _ = embed_person(embedder, x, y)
        fake = generator(perf.channels_last_input(y[:, 0]), person)
        realism, features = discriminator(fake, y[:, 0], torch.tensor([1]))
        (realism.sum() + sum(f.square().mean() for f in features)).backward()
        grads = {f"{i}.{n}": p.grad.clone() for i, net in enumerate(nets) for n, p in net.named_parameters()}
        return fake.detach(), grads

    for net in nets:
        net.eval()  # no power iteration: both passes see the same normalised weights
    fast, fast_grads = run()
    for net in nets:
        use_reference_ops(net)
    reference, reference_grads = run()
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert fast_grads.keys() == reference_grads.keys()
    for name, grad in fast_grads.items():
        ref = reference_grads[name]
        torch.testing.assert_close(grad, ref, rtol=1e-3, atol=1e-4 * (1 + ref.abs().max().item()), msg=name)


def test_prepare_generator_for_inference_renders_the_same_and_leaves_g_alone() -> None:
    torch.manual_seed(0)
    cfg = small_64()
    generator = Generator(cfg).eval()
    open_attention(generator)
    psi = generator.project(torch.randn(1, cfg.embedding_dim)).detach()
    y = random_images(3, 64, 3)
    with torch.no_grad():
        expected = generator(y, adain_params=psi)
    render = perf.prepare_generator_for_inference(generator, psi)
    assert isinstance(render, perf.ConstantAdaINGenerator)
    assert not any(is_spectrally_normalised(m) for m in render.modules())
    assert all(p.is_contiguous(memory_format=CL) for p in render.parameters() if p.ndim == 4)
    assert all(not p.requires_grad for p in render.parameters())
    frozen = [b for b in render.generator.down.blocks if b.resampling_kernel is not None]
    assert len(frozen) == len(render.generator.down.blocks)
    with torch.no_grad():
        torch.testing.assert_close(render(perf.channels_last_input(y)), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(render(y), expected, rtol=1e-4, atol=1e-4)
        # the original G still has its spectral norm and still renders
        assert is_spectrally_normalised(generator.projection)
        torch.testing.assert_close(generator(y, adain_params=psi), expected)
    with pytest.raises(ValueError, match="adain_params"):
        perf.prepare_generator_for_inference(generator, psi[:, :-1])


def test_the_makefile_sets_the_same_allocator_settings_as_python_launchers():
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    run_env = re.search(r"^RUN_ENV := (.*)$", makefile, re.MULTILINE)
    assert run_env, "the Makefile defines no RUN_ENV"
    settings = dict(item.split("=", 1) for item in run_env.group(1).split())
    assert {k: settings.get(k) for k in perf.GLIBC_TUNING} == perf.GLIBC_TUNING
    # jemalloc with page decay off grew without bound in real-data training (docs/performance.md)
    assert "LD_PRELOAD" not in settings and "MALLOC_CONF" not in settings
