"""Config presets, `section.field=value` overrides and save/load."""

from __future__ import annotations

import dataclasses
import json

import pytest

from metahead.config import PRESETS, ExperimentConfig, ModelConfig, apply_overrides, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build(name):
    cfg = preset(name)
    assert isinstance(cfg, ExperimentConfig) and cfg.preset == name
    assert cfg.model.image_size in (32, 64, 128, 256)
    # every resolution a network works at fits inside the image
    assert cfg.model.generator_bottleneck_resolution <= cfg.model.image_size
    assert cfg.train.shots >= 1 and cfg.finetune.shots >= 1
    assert preset(name) is not cfg and preset(name) == cfg  # a fresh copy each time


def test_preset_values_and_unknown_preset():
    assert preset("paper-256").model.image_size == 256 and preset("paper-256").train.shots == 8
    assert preset("cpu-128").model.image_size == 128 and preset("tiny").model.image_size == 32
    with pytest.raises(KeyError, match="unknown preset 'nope'"):
        preset("nope")


# Every field each preset sets away from the dataclass defaults, written out: a preset derived from another
# (or a changed default) cannot drift unseen.
DEMO_MODEL = {
    "model.image_size": 64,
    "model.base_channels": 16,
    "model.max_channels": 128,
    "model.embedding_dim": 128,
    "model.generator_bottleneck_resolution": 8,
    "model.num_bottleneck_blocks": 2,
    "model.attention_down_resolution": 16,
    "model.attention_up_resolution": 32,
    "model.generator_up_widths": "mirror",
    "model.generator_upsampling": "bilinear",
    "model.generator_skips": True,
}
CPU = {"model.generator_up_widths": "mirror", "loss.allow_offline": True}
PRESET_VALUES: dict[str, dict[str, object]] = {
    "paper-256": {},
    "paper-256-v2": {"loss.vgg19_weight": 1.5e-1, "loss.vggface_weight": 2.5e-2, "loss.match_weight": 10.0},
    "cpu-128": {
        **CPU,
        "model.image_size": 128,
        "model.base_channels": 32,
        "model.max_channels": 256,
        "model.embedding_dim": 256,
        "model.num_bottleneck_blocks": 3,
        "train.amp": "auto",
    },
    "cpu-64": {
        **CPU,
        "model.image_size": 64,
        "model.base_channels": 32,
        "model.max_channels": 256,
        "model.embedding_dim": 256,
        "model.generator_bottleneck_resolution": 8,
        "model.num_bottleneck_blocks": 2,
        "train.amp": "auto",
        "train.sample_every": 200,
        "train.checkpoint_every": 200,
    },
    "demo": {
        **DEMO_MODEL,
        "loss.allow_offline": True,
        "loss.identity_network": "none",
        "loss.match_weight": 1.0,
        "loss.pixel_weight": 10.0,
        "loss.laplacian_weight": 90.0,
        "train.shots": 4,
        "train.lr_generator": 2e-4,
        "train.amp": "auto",
        "train.num_workers": 0,
        "train.log_every": 5,
        "train.sample_every": 100,
        "train.checkpoint_every": 100,
        "train.discriminator_steps": 2,
        "train.time_limit_minutes": 5.0,
        "finetune.steps": 400,
        "finetune.min_passes": 100,
        "finetune.batch_size": 2,
        "finetune.lr_generator": 1e-3,
        "finetune.schedule": "cosine",
        "finetune.adam_betas": (0.9, 0.999),
    },
    "real-64": {
        **{k: v for k, v in DEMO_MODEL.items() if k != "model.generator_up_widths"},  # "lab", the default
        "model.base_channels": 32,
        "model.max_channels": 256,
        "model.identity_prior": "dlib",
        "loss.allow_offline": True,
        "loss.identity_weight": 4.0,
        "loss.match_weight": 1.0,
        "loss.pixel_weight": 10.0,
        "loss.laplacian_weight": 90.0,
        "train.steps": 20_000,
        "train.lr_generator": 2e-4,
        "train.amp": "auto",
        "train.num_workers": 0,
        "train.log_every": 20,
        "train.checkpoint_every": 500,
        "finetune.steps": 800,
        "finetune.min_passes": 100,
        "finetune.batch_size": 2,
        "finetune.lr_generator": 1e-3,
        "finetune.schedule": "cosine",
        "finetune.adam_betas": (0.9, 0.999),
    },
    "tiny": {
        **CPU,
        "model.image_size": 32,
        "model.base_channels": 8,
        "model.max_channels": 32,
        "model.embedding_dim": 32,
        "model.generator_bottleneck_resolution": 8,
        "model.num_bottleneck_blocks": 1,
        "model.attention_down_resolution": 16,
        "model.attention_up_resolution": 16,
        "train.shots": 2,
        "train.num_workers": 0,
        "train.log_every": 1,
        "finetune.shots": 2,
        "finetune.steps": 2,
    },
}


def non_default_values(cfg: ExperimentConfig) -> dict[str, object]:
    values = {}
    for section in ("model", "loss", "train", "finetune"):
        settings = getattr(cfg, section)
        defaults = type(settings)()
        for f in dataclasses.fields(settings):
            if getattr(settings, f.name) != getattr(defaults, f.name):
                values[f"{section}.{f.name}"] = getattr(settings, f.name)
    return values


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_values_are_pinned(name):
    assert name in PRESET_VALUES, f"pin preset {name!r}'s values in PRESET_VALUES"
    assert non_default_values(preset(name)) == PRESET_VALUES[name]


def test_overrides_parse_each_type():
    base = preset("tiny")
    cfg = apply_overrides(
        base,
        [
            "train.steps=250",
            "train.lr_generator=1e-4",
            "train.data=/some/where",
            "train.finetunable=false",
            "train.compile=Yes",
            "train.adam_betas=(0.5, 0.9)",
            "loss.vgg19_weights_path=None",
            "loss.vggface_weights_path=/w/vggface.pt",
            "model.spectral_norm=0",
        ],
    )
    assert cfg.train.steps == 250 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr_generator == pytest.approx(1e-4) and isinstance(cfg.train.lr_generator, float)
    assert cfg.train.data == "/some/where"
    assert cfg.train.finetunable is False and cfg.train.compile is True and cfg.model.spectral_norm is False
    assert cfg.train.adam_betas == (0.5, 0.9) and all(isinstance(v, float) for v in cfg.train.adam_betas)
    assert cfg.loss.vgg19_weights_path is None and cfg.loss.vggface_weights_path == "/w/vggface.pt"
    assert apply_overrides(base, ["train.adam_betas=0.1,0.2"]).train.adam_betas == (0.1, 0.2)
    assert base == preset("tiny")  # the input is left alone


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "unknown field 'train.nope'"),
        ("nosection.steps=1", "no config section 'nosection'"),
        ("steps=1", "unknown field 'steps'"),
        ("train.steps", "not of the form"),
        ("train.steps=many", "train.steps: cannot read 'many' as int"),
        ("train.steps=2.5", "cannot read '2.5' as int"),
        ("train.compile=maybe", "expected true/false"),
        ("train.adam_betas=0.5", "expected 2 comma-separated values"),
        ("train.adam_betas=0.5,0.9,0.1", "expected 2 comma-separated values"),
        ("train.adam_betas=0.5,x", "cannot read 'x' as float"),
    ],
)
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset("tiny"), [override])


def test_save_load_round_trip(tmp_path):
    cfg = apply_overrides(preset("cpu-64"), ["train.adam_betas=0.5,0.99", "loss.vgg19_weights_path=/x.pt"])
    path = tmp_path / "config.json"
    cfg.save(path)
    loaded = ExperimentConfig.load(path)
    assert loaded == cfg
    assert isinstance(loaded.model, ModelConfig) and isinstance(loaded.train.adam_betas, tuple)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # atomic write, no temporary left


def test_load_rejects_unknown_fields_and_bad_json(tmp_path):
    path = tmp_path / "config.json"
    data = preset("tiny").to_dict()
    data["train"]["not_a_field"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"{path}: not a valid metahead config.*not_a_field"):
        ExperimentConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid metahead config"):
        ExperimentConfig.load(path)


def test_older_config_files_get_defaults_for_new_fields(tmp_path):
    data = preset("tiny").to_dict()
    del data["model"]["spectral_norm"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    loaded = ExperimentConfig.load(path)
    assert loaded.model.spectral_norm is ModelConfig().spectral_norm
    assert loaded.model.image_size == 32


@pytest.mark.parametrize("old, mode", [(True, "embedder"), (False, "random")])
def test_configs_from_before_issue_19_load_as_they_were_meant(tmp_path, old, mode):
    """init_video_embeddings (a boolean) became video_embedding_init; G's up-path widths and the offline
    switch were added with defaults that differ from what an older file meant."""
    data = preset("paper-256").to_dict()
    del data["train"]["video_embedding_init"], data["model"]["generator_up_widths"]
    del data["loss"]["allow_offline"]
    data["train"]["init_video_embeddings"] = old
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    loaded = ExperimentConfig.load(path)
    assert loaded.train.video_embedding_init == mode
    assert loaded.model.generator_up_widths == "mirror" and loaded.loss.allow_offline is True
    assert data["train"]["init_video_embeddings"] is old  # the caller's dict is left alone


def test_preset_with_overrides_reads_a_name_and_its_overrides_in_one_string():
    from metahead.config import preset_with_overrides

    assert preset_with_overrides("demo") == preset("demo")
    variant = preset_with_overrides("demo:model.generator_upsampling=nearest,train.discriminator_steps=2")
    assert variant.model.generator_upsampling == "nearest" and variant.train.discriminator_steps == 2
    assert variant.preset == "demo" and variant.model.image_size == 64
    with pytest.raises(ValueError, match="unknown field"):
        preset_with_overrides("demo:model.upsampling=nearest")
