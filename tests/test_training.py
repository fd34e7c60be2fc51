"""Meta-learning trainer: episode stream, checkpoints, logging, the loop end to end, resume, NaN stop."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from metahead.config import apply_overrides, preset
from metahead.data.format import DatasetInfo, VideoRecord, write_info, write_manifest, write_video
from metahead.landmarks.draw import draw_landmarks
from metahead.training import checkpoint, distributed
from metahead.training.logging import sample_grid


def _template_landmarks(size: int) -> np.ndarray:
    """68 points laid out like a face (jaw arc, brows, nose, eyes, lips) in a size x size crop."""
    c = size / 2
    pts = []
    for t in np.linspace(np.pi * 0.95, np.pi * 0.05, 17):  # jaw
        pts.append((c + 0.4 * size * np.cos(t), c + 0.05 * size + 0.35 * size * np.sin(t)))
    for x0 in (-0.3, 0.1):  # brows
        pts += [(c + (x0 + 0.05 * i) * size, c - 0.2 * size) for i in range(5)]
    pts += [(c, c + (-0.12 + 0.05 * i) * size) for i in range(4)]  # nose bridge
    pts += [(c + (-0.08 + 0.04 * i) * size, c + 0.1 * size) for i in range(5)]  # nostrils
    for ex in (-0.17, 0.17):  # eyes
        pts += [
            (c + ex * size + 0.07 * size * np.cos(t), c - 0.08 * size + 0.03 * size * np.sin(t))
            for t in np.linspace(0, 2 * np.pi, 6, endpoint=False)
        ]
    pts += [
        (c + 0.16 * size * np.cos(t), c + 0.25 * size + 0.06 * size * np.sin(t))
        for t in np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ]  # outer lips
    pts += [
        (c + 0.1 * size * np.cos(t), c + 0.25 * size + 0.03 * size * np.sin(t))
        for t in np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ]  # inner lips
    return np.asarray(pts, dtype=np.float32)


def make_tiny_dataset(root: Path, videos: int = 4, frames: int = 6, size: int = 32, seed: int = 0) -> Path:
    """A dataset in the project's format: per video a colour and a jittered face template, drawn over noise.

    Learnable (the frame follows its landmarks and the video's colour) and quick to decode.
    """
    rng = np.random.default_rng(seed)
    template = _template_landmarks(size)
    write_info(root, DatasetInfo(image_size=size, frame_codec="png", source="tests"))
    records = []
    for v in range(videos):
        colour = rng.uniform(0.3, 1.0, size=3)
        shift = rng.normal(0, size * 0.03, size=(frames, 1, 2))
        landmarks = (template[None] + shift + rng.normal(0, size * 0.01, size=(frames, 68, 2))).astype(
            np.float32
        )
        drawn = draw_landmarks(torch.from_numpy(landmarks), size).permute(0, 2, 3, 1).numpy()
        noise = rng.uniform(0, 0.15, size=(frames, size, size, 3))
        images = np.clip(drawn * colour + noise, 0, 1)
        path = f"id{v % 2:02d}/vid{v:02d}"
        write_video(root, path, (images * 255).astype(np.uint8), landmarks, codec="png")
        records.append(
            VideoRecord(
                identity=f"id{v % 2:02d}", video=f"vid{v:02d}", split="train", num_frames=frames, path=path
            )
        )
    records.append(
        VideoRecord(identity="id99", video="test00", split="test", num_frames=frames, path="id00/vid00")
    )
    write_manifest(root, records)
    return root


def tiny_config(data: Path, out: Path, *overrides: str):
    cfg = preset("tiny")
    cfg = apply_overrides(
        cfg,
        [
            f"train.data={data}",
            f"train.out={out}",
            "train.steps=4",
            "train.checkpoint_every=2",
            "train.sample_every=2",
            "train.log_every=1",
            "train.num_workers=0",
            "train.device=cpu",
            "loss.identity_network=none",
            *overrides,
        ],
    )
    return cfg


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


# --- Episode stream -----------------------------------------------------------------------------------


def _ctx(rank: int = 0, world: int = 1) -> distributed.DistributedContext:
    return distributed.DistributedContext(
        rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu")
    )


def _take(sampler, count: int) -> list[tuple[int, int]]:
    it = iter(sampler)
    return [next(it) for _ in range(count)]


def test_sampler_shards_epochs_over_ranks_and_resumes_mid_stream():
    num_videos, batch = 10, 2
    per_rank = [
        distributed.EpisodeSampler(num_videos, _ctx(r, 2), seed=3, batch_size=batch) for r in range(2)
    ]
    assert per_rank[0].batches_per_epoch == 2  # 5 videos per rank -> 2 whole batches
    firsts = [_take(s, 4) for s in per_rank]
    # Within an epoch the two ranks see different videos.
    assert not {i for i, _ in firsts[0]} & {i for i, _ in firsts[1]}
    # Epoch 2 is a new order with new episode seeds.
    long = _take(per_rank[0], 12)
    assert [s for _, s in long[:4]] != [s for _, s in long[4:8]]
    assert len({s for _, s in long}) == 12
    # Resuming after 3 batches continues the very same stream.
    resumed = distributed.EpisodeSampler(num_videos, _ctx(0, 2), seed=3, batch_size=batch, start_batch=3)
    assert _take(resumed, 6) == long[6:12]


def test_sampler_refuses_too_few_videos():
    with pytest.raises(ValueError, match="too few"):
        distributed.EpisodeSampler(3, _ctx(0, 2), seed=0, batch_size=4)


def test_seeded_episodes_are_reproducible_and_leave_global_rng_alone():
    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return torch.rand(4) + index

    seeded = distributed.SeededEpisodes(Draws())
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = seeded[(1, 123)]
    assert torch.equal(first, seeded[(1, 123)])
    assert not torch.equal(first, seeded[(1, 124)])
    assert torch.equal(torch.rand(1), expected_next)


# --- Logging ------------------------------------------------------------------------------------------


def test_sample_grid_layout():
    b, k, s = 2, 3, 8
    grid = sample_grid(
        -torch.ones(b, 3, s, s),
        torch.zeros(b, k, 3, s, s),
        torch.ones(b, 3, s, s),
        torch.ones(b, 3, s, s),
        padding=2,
    )
    assert grid.shape == (3, b * (s + 2) + 2, (k + 3) * (s + 2) + 2)
    assert grid[:, 2:10, 2:10].max() == 0  # landmark column, from -1
    assert torch.allclose(grid[:, 2:10, 12:20], torch.full((3, 8, 8), 0.5))  # a K-shot input, from 0
    assert grid.min() >= 0 and grid.max() <= 1


# --- W's optimiser -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_rowwise_adam_equals_dense_adam_for_beta1_zero(sparse):
    """A few rows per step, as in meta-learning: RowwiseAdam on W's rows = torch.optim.Adam on the table."""
    from metahead.training.video_embeddings import RowwiseAdam, row_gradients

    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=sparse)
    reference = torch.nn.Parameter(table.weight.detach().clone())
    dense_adam = torch.optim.Adam([reference], lr=1e-2, betas=(0.0, 0.999))
    rowwise = RowwiseAdam(table.weight, lr=1e-2, betas=(0.0, 0.999))
    for _ in range(40):
        index = torch.randint(0, 50, (3,))  # repeats allowed: their gradients add up
        target = torch.randn(3, 8)
        table.weight.grad = None
        ((table(index) - target) ** 2).sum().backward()
        rowwise.step(*row_gradients(table.weight))
        dense_adam.zero_grad()
        ((torch.nn.functional.embedding(index, reference) - target) ** 2).sum().backward()
        dense_adam.step()
    assert torch.allclose(table.weight, reference, atol=1e-6, rtol=0)
    # state_dict round trip continues identically
    copy = RowwiseAdam(torch.nn.Parameter(table.weight.detach().clone()), lr=1e-2, betas=(0.0, 0.999))
    copy.load_state_dict(rowwise.state_dict())
    rows, grads = torch.tensor([1, 7]), torch.randn(2, 8)
    rowwise.step(rows, grads)
    copy.step(rows, grads)
    assert torch.equal(copy.weight, table.weight)


def test_rowwise_adam_with_momentum_moves_only_visited_rows():
    from metahead.training.video_embeddings import RowwiseAdam

    weight = torch.nn.Parameter(torch.zeros(5, 2))
    adam = RowwiseAdam(weight, lr=0.1, betas=(0.9, 0.999))
    adam.step(torch.tensor([0]), torch.ones(1, 2))
    moved = weight.detach().clone()
    adam.step(torch.tensor([3]), torch.ones(1, 2))
    assert torch.equal(weight[0], moved[0]) and torch.all(weight[3] < 0) and torch.all(weight[[1, 2, 4]] == 0)


# --- Checkpoints --------------------------------------------------------------------------------------


def _networks(cfg, num_videos=3):
    from metahead.models import Discriminator, Embedder, Generator

    torch.manual_seed(0)
    return Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, num_videos)


def _save_dummy_state(run: Path, step: int, cfg, nets, keep: int = 2) -> Path:
    e, g, d = nets
    opt_g = torch.optim.Adam([*e.parameters(), *g.parameters()])
    opt_d = torch.optim.Adam(d.parameters())
    return checkpoint.save_state(
        run,
        step,
        cfg=cfg,
        networks={"embedder": e, "generator": g, "discriminator": d},
        optimizers={"generator": opt_g, "discriminator": opt_d},
        num_videos=d.num_videos,
        rng_states=[checkpoint.capture_rng_state()],
        keep=keep,
    )


def test_state_round_trip_keeps_last_k_and_loads_weights_only(tmp_path):
    cfg = preset("tiny")
    nets = _networks(cfg)
    for step in (1, 2, 3):
        _save_dummy_state(tmp_path, step, cfg, nets, keep=2)
    assert [s for s, _ in checkpoint.list_states(tmp_path)] == [2, 3]
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # no temporary files left behind
    state = checkpoint.load_state(checkpoint.latest_state(tmp_path))
    assert state["step"] == 3 and state["num_videos"] == 3 and state["version"] == checkpoint.FORMAT_VERSION
    assert torch.equal(
        state["networks"]["discriminator"]["video_embeddings.weight"], nets[2].video_embeddings.weight
    )


def test_rng_state_round_trip():
    import random

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    saved = checkpoint.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    checkpoint.restore_rng_state(saved)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_model_file_leaves_out_w_and_rebuilds_networks(tmp_path):
    cfg = preset("tiny")
    e, g, d = _networks(cfg, num_videos=5)
    path = checkpoint.save_model(tmp_path / "model.pt", cfg, e, g, d, num_videos=5, step=7)
    raw = torch.load(path, weights_only=True)
    assert raw["num_videos"] == 5 and raw["step"] == 7
    assert not any(k.startswith("video_embeddings") for k in raw["discriminator"])
    e2, g2, d2, cfg2 = checkpoint.load_model(path)
    assert cfg2 == cfg
    landmarks = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        e.eval(), g.eval(), d.eval()
        ref = g(landmarks, person_embedding=e(landmarks, landmarks))
        out = g2(landmarks, person_embedding=e2(landmarks, landmarks))
        w = (d.w0 + torch.ones(cfg.model.embedding_dim))[None]
        ref_r, _ = d.forward_with_embedding(ref, landmarks, w)
        out_r, _ = d2.forward_with_embedding(out, landmarks, w)
    assert torch.equal(out, ref)
    assert torch.equal(out_r, ref_r)


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.MODEL_FORMAT, "payload": _Sneaky()}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"evil\.pt: .*could run code") as err:
        checkpoint.load_model(path)
    assert "weights_only" not in str(err.value)  # never advise running a file's code


def test_truncated_model_and_state_are_described_in_our_words(tmp_path):
    cfg = preset("tiny")
    e, g, d = _networks(cfg)
    whole = checkpoint.save_model(tmp_path / "model.pt", cfg, e, g, d, num_videos=3).read_bytes()
    for cut in (len(whole) // 2, 0):
        (tmp_path / "model.pt").write_bytes(whole[:cut])
        with pytest.raises(checkpoint.CheckpointError, match=r"model\.pt: .*truncated or damaged") as err:
            checkpoint.load_model(tmp_path / "model.pt")
        assert "weights_only" not in str(err.value)
    path = _save_dummy_state(tmp_path, 1, cfg, (e, g, d))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match=r"state-00000001\.pt: .*truncated or damaged"):
        checkpoint.load_state(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"no training state there is readable"):
        checkpoint.newest_readable_state(tmp_path)


def test_wrong_format_and_missing_file(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(checkpoint.CheckpointError, match="something-else"):
        checkpoint.load_state(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint.load_model(tmp_path / "nope.pt")
    expected = "expected 'metahead-model' or 'metahead-training-state'"
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        checkpoint.load_model(tmp_path / "x.pt")


# --- The loop -----------------------------------------------------------------------------------------


def _all_parameters(run: Path) -> dict[str, torch.Tensor]:
    state = checkpoint.load_state(checkpoint.latest_state(run))
    flat = {}
    for net, weights in state["networks"].items():
        flat.update({f"{net}.{k}": v for k, v in weights.items()})
    for opt in ("generator", "discriminator"):
        for pid, s in state["optimizers"][opt]["state"].items():
            flat.update({f"{opt}.{pid}.{k}": v for k, v in s.items()})
    w_opt = state["optimizers"]["video_embeddings"]
    flat.update({f"video_embeddings.{k}": v for k, v in w_opt.items() if isinstance(v, torch.Tensor)})
    flat["video_embeddings.step"] = torch.tensor(w_opt["step"])
    return flat


def test_train_tiny_run_writes_everything(tiny_data, tmp_path):
    from metahead.training.meta import train

    run = train(
        tiny_config(tiny_data, tmp_path / "run", "train.checkpoint_every=1", "train.keep_checkpoints=3")
    )
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 4
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in (
        "loss/content",
        "loss/adversarial",
        "loss/match",
        "loss/discriminator",
        "score/real",
        "score/fake",
        "grad_norm/embedder",
        "grad_norm/generator",
        "grad_norm/discriminator",
        "throughput/images_per_s",
    ):
        assert all(math.isfinite(r[key]) for r in records), key
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step-00000001.png",
        "step-00000002.png",
        "step-00000004.png",
    ]
    assert [s for s, _ in checkpoint.list_states(run)] == [2, 3, 4]  # the last 3 kept
    assert list((run / "tensorboard").iterdir())
    from PIL import Image

    with Image.open(run / "curves.png") as curves:
        assert curves.size[0] > 400 and len(curves.getcolors(1 << 16)) > 3  # drawn, not blank
    # Between two steps only the row W_i of the step's video moves (Adam's beta1 = 0 leaves the others).
    w = [
        checkpoint.load_state(p)["networks"]["discriminator"]["video_embeddings.weight"]
        for _, p in checkpoint.list_states(run)
    ]
    for before, after in zip(w, w[1:]):
        assert (after != before).any(dim=1).sum() == 1  # batch 1: exactly one video's row
    e, g, d, cfg = checkpoint.load_model(run / "model.pt")
    assert cfg.train.steps == 4
    # Any kept training state loads as the model file of its step: the last one as model.pt itself (but
    # D-lite's placeholder W, drawn afresh at each load).
    from_state = checkpoint.load_model(checkpoint.latest_state(run))
    for net, again in zip((e, g, d), from_state[:3]):
        for (k, a), b in zip(net.state_dict().items(), again.state_dict().values()):
            placeholder = k.startswith(checkpoint.VIDEO_EMBEDDINGS_PREFIX)
            assert placeholder or torch.equal(a, b), (type(net).__name__, k)
    earlier = checkpoint.load_model(checkpoint.list_states(run)[0][1])[1]
    assert not all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), earlier.state_dict().values()))


def test_resume_continues_exactly(tiny_data, tmp_path):
    from metahead.training.meta import train

    # Episodes do not depend on which DataLoader worker draws them: the halves use 2 and 1 workers.
    straight = train(tiny_config(tiny_data, tmp_path / "straight", "train.batch_size=2"))
    halves = tmp_path / "halves"
    train(tiny_config(tiny_data, halves, "train.batch_size=2", "train.steps=2", "train.num_workers=2"))
    train(tiny_config(tiny_data, halves, "train.batch_size=2", "train.num_workers=1"), resume=True)
    expected, got = _all_parameters(straight), _all_parameters(halves)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different
    # ...and training moved the weights at all (so the comparison means something).
    first = checkpoint.load_state(checkpoint.list_states(halves)[0][1])
    assert not torch.equal(
        first["networks"]["generator"]["out_conv.parametrizations.weight.original"],
        got["generator.out_conv.parametrizations.weight.original"],
    )


def test_resume_passes_over_a_truncated_newest_state(tiny_data, tmp_path, capsys):
    from metahead.training.meta import train

    run = tmp_path / "run"
    train(
        tiny_config(tiny_data, run, "train.steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=0")
    )
    newest = checkpoint.state_path(run, 2)
    newest.write_bytes(newest.read_bytes()[:4096])  # a node lost while writing, a full disk
    capsys.readouterr()
    train(tiny_config(tiny_data, run, "train.steps=3", "train.checkpoint_every=1"), resume=True)
    out = capsys.readouterr().out
    assert f"resumed from {checkpoint.state_path(run, 1)}" in out
    assert f"passed over a newer training state: {newest}: not a readable metahead checkpoint" in out
    assert [checkpoint.load_state(p)["step"] for _, p in checkpoint.list_states(run)] == [1, 2, 3]


def test_resume_with_another_content_loss_is_refused(tiny_data, tmp_path):
    from metahead.training.meta import CONTENT_LOSS_FILE, train

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.steps=1"))
    recorded = json.loads((run / CONTENT_LOSS_FILE).read_text())
    assert recorded["terms"] == {"pixel": {"weight": 1.0, "scales": 3}}
    assert checkpoint.load_state(checkpoint.latest_state(run))["content_loss"] == recorded
    assert torch.load(run / "model.pt", weights_only=True)["content_loss"] == recorded
    refused = (
        r"state-00000001\.pt: was trained with another content loss.*terms: .*'weight': 1\.0.*'weight': 2\.0"
    )
    with pytest.raises(checkpoint.CheckpointError, match=refused):
        train(tiny_config(tiny_data, run, "train.steps=2", "loss.pixel_weight=2"), resume=True)
    assert json.loads((run / "config.json").read_text())["loss"]["pixel_weight"] == 1.0  # left as it was
    assert json.loads((run / CONTENT_LOSS_FILE).read_text()) == recorded
    train(tiny_config(tiny_data, run, "train.steps=2"), resume=True)  # the same loss resumes


def test_resume_may_change_the_content_loss_on_purpose(tiny_data, tmp_path, capsys):
    from metahead.training.meta import CONTENT_LOSS_FILE, train

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.steps=1"))
    capsys.readouterr()
    train(tiny_config(tiny_data, run, "train.steps=2", "loss.pixel_weight=2"), resume=True, change_loss=True)
    changed_on_purpose = r"content loss changed on purpose.*'weight': 1\.0.*'weight': 2\.0"
    assert re.search(changed_on_purpose, capsys.readouterr().out)
    changed = json.loads((run / CONTENT_LOSS_FILE).read_text())
    assert changed["terms"] == {"pixel": {"weight": 2.0, "scales": 3}}
    assert checkpoint.load_state(checkpoint.latest_state(run))["content_loss"] == changed
    assert checkpoint.load_state(checkpoint.latest_state(run))["step"] == 2
    # From then on the changed loss is the run's own: a plain resume takes it, the old one is refused.
    train(tiny_config(tiny_data, run, "train.steps=3", "loss.pixel_weight=2"), resume=True)
    with pytest.raises(checkpoint.CheckpointError, match="another content loss"):
        train(tiny_config(tiny_data, run, "train.steps=4"), resume=True)


def test_resume_may_switch_generator_upsampling_but_not_a_weight_shape(tiny_data, tmp_path):
    from metahead.training.meta import train

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.steps=1"))
    with pytest.raises(ValueError, match="was trained with model config"):
        train(tiny_config(tiny_data, run, "train.steps=2", "model.base_channels=16"), resume=True)
    train(tiny_config(tiny_data, run, "train.steps=2", "model.generator_upsampling=bilinear"), resume=True)
    _, generator, _, cfg = checkpoint.load_model(run / "model.pt")
    assert cfg.model.generator_upsampling == "bilinear"
    assert {block.upsampling for block in generator.up} == {"bilinear"}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
    from metahead.training.meta import TrainingDiverged, train

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.steps=1", "train.amp=bf16"))  # bf16 autocast runs, finitely
    before = (checkpoint.latest_state(run).read_bytes(), (run / "model.pt").read_bytes())
    with pytest.raises(TrainingDiverged, match=r"step 2: the E/G loss is not finite.*state-00000001\.pt"):
        train(tiny_config(tiny_data, run, "loss.feature_matching_weight=nan"), resume=True)
    assert [s for s, _ in checkpoint.list_states(run)] == [1]
    assert (checkpoint.latest_state(run).read_bytes(), (run / "model.pt").read_bytes()) == before
    # Without --resume, a run folder with checkpoints is refused rather than overwritten.
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(tiny_config(tiny_data, run, "train.steps=2"))


def test_feed_forward_model_learns(tiny_data, tmp_path):
    """The FF model (no L_MCH), two D steps per G step, channels_last: the content loss falls on the
    learnable tiny set."""
    from metahead.training.meta import train

    run = train(
        tiny_config(
            tiny_data,
            tmp_path / "ff",
            "train.finetunable=false",
            "train.steps=30",
            "train.discriminator_steps=2",
            "train.lr_generator=1e-3",
            "train.lr_discriminator=1e-3",
            "train.checkpoint_every=30",
            "train.sample_every=30",
            "train.channels_last=true",
        )
    )
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "loss/match" not in records[-1] and all(math.isfinite(r["loss/discriminator"]) for r in records)
    content = [r["loss/content"] for r in records]
    assert np.mean(content[-5:]) < 0.7 * np.mean(content[:5])


def test_cli_train_saves_resolved_config(tiny_data, tmp_path):
    from metahead.cli import main

    run = tmp_path / "cli"
    sets = ["train.steps=1", "train.device=cpu", "loss.identity_network=none", "loss.match_weight=10"]
    args = ["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run)]
    assert main(args + [x for item in sets for x in ("--set", item)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss"]["match_weight"] == 10 and saved["train"]["out"] == str(run)
    # Resuming without --config reads the run's own config; --set still applies. A time limit that has
    # passed at once stops after one more step, with a checkpoint.
    resume = ["train", "--out", str(run), "--resume", "--set", "train.steps=9"]
    assert main(resume + ["--set", "train.time_limit_minutes=1e-9"]) == 0
    assert [s for s, _ in checkpoint.list_states(run)] == [1, 2]
    assert json.loads((run / "config.json").read_text())["loss"]["match_weight"] == 10
    assert main(["train", "--out", str(run), "--data", str(tiny_data)]) == 2  # no --config, no --resume


def test_dry_run_reports_what_to_check_before_booking_gpus(tiny_data, tmp_path, capsys, monkeypatch):
    from metahead.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may be left behind, here or in a run folder
    sets = ["train.device=cpu", "loss.identity_network=none", "train.batch_size=2"]
    args = ["train", "--config", "tiny", "--data", str(tiny_data), "--dry-run"]
    capsys.readouterr()
    assert main(args + [x for item in sets for x in ("--set", item)]) == 0
    report = capsys.readouterr().out
    lines = report[report.index("metahead train --dry-run") :].splitlines()
    assert lines[0].startswith("metahead train --dry-run: preset tiny, 4 training videos, 1 process(es)")
    assert lines[1].startswith("parameters: E ") and " G " in lines[1] and " D " in lines[1]
    assert lines[2].startswith("W: 4 x 32 = ")
    assert lines[3].startswith("peak memory: ")
    assert lines[4].startswith("step time: ") and "images/s" in lines[4]
    assert lines[5].startswith("one epoch: 2 steps of 2 x 1 episodes: ")  # 4 videos, batch 2
    assert lines[6].startswith("W's start (centred): E over K frames") and "timed on 4" in lines[6]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_compiled_networks_train_like_eager(tiny_data, tmp_path):
    """train.compile=true (minutes of compiling on a CPU) gives the eager run's losses."""
    from metahead.training.meta import train

    logs = []
    for compiled in (False, True):
        run = train(
            tiny_config(tiny_data, tmp_path / f"c{compiled}", "train.steps=2", f"train.compile={compiled}")
        )
        logs.append([json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()])
    for eager, compiled in zip(*logs):
        for key in ("loss/content", "loss/adversarial", "loss/match", "loss/discriminator"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-3, abs=1e-4), key


def test_weight_average_warms_up_then_follows_slowly_and_copies_buffers():
    from metahead.training.ema import WeightAverage

    net = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(3, 2))
    average = WeightAverage({"net": net}, decay=0.9)
    original = net.parametrizations.weight.original
    with torch.no_grad():
        original.fill_(0.0)
    average.update()  # the first update copies
    averaged = average["net"].parametrizations.weight.original
    assert torch.equal(averaged, original) and average["net"] is not net
    with torch.no_grad():
        original.fill_(1.0)
    average.update()  # n = 1: warm-up decay min(0.9, 2 / 11)
    assert torch.allclose(averaged, torch.full_like(averaged, 1 - 2 / 11))
    for _ in range(200):
        average.update()
    assert torch.allclose(averaged, torch.ones_like(averaged), atol=1e-6)
    live_u = dict(net.named_buffers())["parametrizations.weight.0._u"]
    assert torch.equal(dict(average["net"].named_buffers())["parametrizations.weight.0._u"], live_u)
    off = WeightAverage({"net": net}, decay=0.0)
    assert off["net"] is net and not off.enabled and off.state_dict() == {}
    with pytest.raises(ValueError, match="decay"):
        WeightAverage({"net": net}, decay=1.0)


def test_ema_run_writes_the_average_to_the_model_file_and_resumes_exactly(tiny_data, tmp_path):
    from metahead.training.meta import train

    settings = ("train.ema_decay=0.5", "train.video_embedding_init=centred", "train.lr_generator=1e-3")
    straight = train(tiny_config(tiny_data, tmp_path / "straight", *settings))
    state = checkpoint.load_state(checkpoint.latest_state(straight))
    assert set(state["averaged"]) == {"embedder", "generator"}
    key = "out_conv.parametrizations.weight.original"
    live = state["networks"]["generator"][key]
    averaged = state["averaged"]["generator"][f"module.{key}"]
    _, generator, _, _ = checkpoint.load_model(straight / "model.pt")
    assert torch.equal(dict(generator.named_parameters())[key], averaged)
    _, from_state, _, _ = checkpoint.load_model(checkpoint.latest_state(straight))
    assert torch.equal(dict(from_state.named_parameters())[key], averaged)  # a state renders its average too
    assert not torch.equal(live, averaged)  # the model file holds the average, not the last step's weights
    halves = tmp_path / "halves"
    train(tiny_config(tiny_data, halves, *settings, "train.steps=2"))
    train(tiny_config(tiny_data, halves, *settings), resume=True)
    resumed = checkpoint.load_state(checkpoint.latest_state(halves))
    assert torch.equal(resumed["averaged"]["generator"][f"module.{key}"], averaged)


def test_centred_video_embeddings_start_with_zero_mean(tiny_data, tmp_path):
    from metahead.training.meta import train

    run = train(
        tiny_config(tiny_data, tmp_path / "run", "train.steps=1", "train.video_embedding_init=centred")
    )
    w = checkpoint.load_state(checkpoint.latest_state(run))["networks"]["discriminator"][
        "video_embeddings.weight"
    ]
    # one step moved one row at D's rate; the table's mean stays near zero (E's embeddings are all > 0)
    assert w.mean(0).abs().max() < 0.05 * w.abs().max()
    with pytest.raises(ValueError, match="video_embedding_init"):
        train(tiny_config(tiny_data, tmp_path / "bad", "train.video_embedding_init=zero"))


def test_discriminator_balance_reads_the_last_fifth_of_the_log():
    from metahead.training.logging import discriminator_balance

    records = [{"step": s, "score/real": 1.0, "score/fake": 1.0, "loss/discriminator": 2.0} for s in range(8)]
    records += [
        {"step": 8 + s, "score/real": 2.0, "score/fake": -1.0, "loss/discriminator": 0.5} for s in range(2)
    ]
    records.append({"step": 10, "loss/content": 0.3})  # a record without scores is skipped
    balance = discriminator_balance(records)
    assert balance == {"score_gap": 3.0, "discriminator_loss": 0.5, "from_step": 8.0}
    assert math.isnan(discriminator_balance([])["score_gap"])


def test_identity_prior_trains_only_its_projection_and_round_trips(tiny_data, tmp_path):
    from metahead.training.meta import train

    run = train(tiny_config(tiny_data, tmp_path / "run", "train.steps=2", "model.identity_prior=dlib"))
    embedder, _, _, cfg = checkpoint.load_model(run / "model.pt")
    assert cfg.model.identity_prior == "dlib"
    prior = embedder.identity_prior
    assert prior.projection.weight.abs().sum() > 0  # moved off its zero start in two steps
    # dlib's network is saved as loaded: the trainer's optimizer never touched it
    fresh = type(prior.network).from_dlib_file()
    for (name, saved), original in zip(prior.network.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(saved, original), name


def test_standardised_identity_prior_is_measured_on_training_frames_once_and_kept(tiny_data, tmp_path):
    from metahead.data.episodes import EpisodeDataset
    from metahead.training.meta import train

    overrides = ("train.steps=2", "model.identity_prior=dlib", "model.identity_prior_standardised=true")
    run = train(tiny_config(tiny_data, tmp_path / "run", *overrides))
    embedder, _, _, _ = checkpoint.load_model(run / "model.pt")
    prior = embedder.identity_prior
    # the statistics of the training frames' own descriptors: 4 frames of every video, spread over it
    dataset = EpisodeDataset(tiny_data, shots=2, image_size=32)
    frames = []
    for index, record in enumerate(dataset.records):
        ids = torch.linspace(0, record.num_frames - 1, 4).round().long().unique().tolist()
        frames.append(dataset.read_frames(index, ids)[0])
    descriptors = prior.descriptors(torch.cat(frames))
    torch.testing.assert_close(prior.descriptor_mean, descriptors.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prior.descriptor_scale, descriptors.std(0), atol=1e-4, rtol=1e-4)
    # a resumed run keeps the statistics it saved instead of measuring them again
    newest = sorted((run / "checkpoints").glob("state-*.pt"))[-1]
    state = torch.load(newest, weights_only=False)
    state["networks"]["embedder"]["identity_prior.descriptor_mean"] += 1.0
    torch.save(state, newest)
    resumed = train(tiny_config(tiny_data, tmp_path / "run", *overrides[1:], "train.steps=3"), resume=True)
    embedder, _, _, _ = checkpoint.load_model(resumed / "model.pt")
    kept = embedder.identity_prior.descriptor_mean
    torch.testing.assert_close(kept, descriptors.mean(0) + 1.0, atol=1e-4, rtol=1e-4)


def test_identity_prior_cache_gives_the_loop_each_shots_own_descriptor(tiny_data, tmp_path, monkeypatch):
    """In the training loop, every descriptor E's prior takes from the per-frame cache is the descriptor of
    the image it stands for (the frames' indices reach the cache with their images), frames drawn again
    come from the cache, and the run's losses are those of a run that computes every descriptor."""
    from metahead.training import face_descriptors, meta

    lookup = face_descriptors.FrameDescriptorCache.__call__
    caches = []

    def checked(cache, shot_images, *args, **kwargs):
        got = lookup(cache, shot_images, *args, **kwargs)
        caches.append(cache)
        expected = cache.prior.descriptors(shot_images.flatten(0, 1)).float().view_as(got)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        return got

    monkeypatch.setattr(face_descriptors.FrameDescriptorCache, "__call__", checked)
    overrides = ("train.steps=8", "train.checkpoint_every=8", "model.identity_prior=dlib")
    cached = meta.train(tiny_config(tiny_data, tmp_path / "cached", *overrides))
    assert len(caches) == 8 and caches[0].computed < caches[0].looked_up == 8 * 2
    monkeypatch.setattr(face_descriptors, "MAX_CACHED_FRAMES", 0)  # too many frames for a cache: none
    computed = meta.train(tiny_config(tiny_data, tmp_path / "computed", *overrides))
    assert len(caches) == 8
    logs = [
        [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        for run in (cached, computed)
    ]
    for a, b in zip(*logs, strict=True):
        for key in ("loss/generator_total", "loss/discriminator", "loss/match"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
