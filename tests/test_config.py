"""Config: presets, profiles, --set overrides, validation, batch scaling, run-dir round trip."""
import dataclasses

import pytest

from centernet_core import config as C
from centernet_core import run_dir
from centernet_core.errors import ConfigError

PRESETS = ["dla34-coco", "dla34-custom", "dla34-pose-coco", "hourglass104-coco", "hourglass104-finetune",
           "hourglass104-pose-coco", "mobilenetv2-coco", "mobilenetv2-custom", "resnet18-coco", "resnet18-custom",
           "resnet50-coco", "shapes-keypoints-tiny", "shapes-tiny"]
PROFILES = ["cpu", "cpu-bf16", "gpu", "gpu-x8", "multiworker", "tpu-v3-8"]


def test_presets_and_profiles_are_shipped():
    assert C.experiment_names() == PRESETS
    assert C.profile_names() == PROFILES


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves_with_every_profile(name):
    for profile in PROFILES:
        cfg = C.resolve(name, profile=profile)
        assert cfg.name == name and cfg.runtime.profile == profile
        assert cfg.train.reference_batch_size == cfg.runtime.global_batch_size


def test_seed_recipe_under_tpu_profile_is_unchanged():
    cfg = C.resolve("hourglass104-coco", profile="tpu-v3-8")
    assert (cfg.model.backbone, cfg.model.input_size, cfg.model.head_channels) == ("hourglass104", 512, 256)
    assert (cfg.runtime.strategy, cfg.runtime.precision, cfg.runtime.global_batch_size) == ("tpu", "mixed_bfloat16", 128)
    assert (cfg.train.steps, cfg.train.learning_rate, cfg.train.warmup_steps) == (140_000, 1e-3, 2000)


def test_gpu_x8_profile_scales_the_seed_recipe_to_the_gpu_yaml():
    # Batch 64: the seed's GPU recipe (lr 5e-4, 280k steps); warmup keeps its length in images.
    cfg = C.resolve("hourglass104-coco", profile="gpu-x8")
    assert cfg.runtime.global_batch_size == 64
    assert cfg.train.steps == 280_000
    assert cfg.train.learning_rate == pytest.approx(5e-4)
    assert cfg.train.warmup_steps == 4000


def test_scaling_is_idempotent_and_can_be_disabled():
    cfg = C.resolve("resnet18-coco", profile="cpu")  # batch 16 from reference 128
    assert cfg.train.steps == 129_360 * 8 and cfg.train.decay_boundaries == (83_160 * 8, 110_880 * 8)
    assert C.scale_to_batch(cfg) == cfg
    raw = C.resolve("resnet18-coco", profile="cpu", overrides=["train.scale_with_batch=false"])
    assert raw.train.steps == 129_360 and raw.train.learning_rate == 5e-4


def test_overrides_are_typed():
    cfg = C.resolve("shapes-tiny", overrides=["train.steps=7", "train.warmup_steps=2", "eval.flip=true", "data.crop_scales=0.5,1.5", "eval.scales=2",
                                              "train.learning_rate=1e-3", "model.backbone_weights=007"])
    assert cfg.train.steps == 7 and cfg.eval.flip is True
    assert cfg.data.crop_scales == (0.5, 1.5) and cfg.eval.scales == (2.0,)
    assert cfg.train.learning_rate == 1e-3 and isinstance(cfg.train.learning_rate, float)
    assert cfg.model.backbone_weights == "007"  # strings stay verbatim


def test_unknown_key_names_the_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.no_such_key'; did you mean .*model\."):
        C.resolve("shapes-tiny", overrides=["model.no_such_key=1"])
    with pytest.raises(ConfigError, match=r"did you mean model.num_classes"):
        C.resolve("shapes-tiny", overrides=["model.num_clases=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian.steps'.*train.steps"):
        C.resolve("shapes-tiny", overrides=["trian.steps=3"])


def test_wrong_type_names_the_expected_type():
    with pytest.raises(ConfigError, match=r"train.steps: expected an integer, got 'abc'"):
        C.resolve("shapes-tiny", overrides=["train.steps=abc"])
    with pytest.raises(ConfigError, match=r"eval.flip: expected true or false"):
        C.resolve("shapes-tiny", overrides=["eval.flip=3"])
    with pytest.raises(ConfigError, match=r"KEY=VALUE"):
        C.resolve("shapes-tiny", overrides=["train.steps"])


def test_unknown_experiment_and_profile():
    with pytest.raises(ConfigError, match=r"unknown experiment 'hourglass104'.*did you mean hourglass104-coco"):
        C.resolve("hourglass104")
    with pytest.raises(ConfigError, match=r"unknown profile 'tpu'.*valid: cpu, cpu-bf16"):
        C.resolve("shapes-tiny", profile="tpu")


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: [resnet18\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ is not valid YAML"):
        C.resolve(config_file=str(bad))
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        C.resolve(config_file=str(notmap))
    with pytest.raises(ConfigError, match="config file not found"):
        C.resolve(config_file=str(tmp_path / "missing.yaml"))


def test_config_file_and_cross_field_validation(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("model: {backbone: hourglass52, input_size: 500, num_classes: 5}\n")
    with pytest.raises(ConfigError, match=r"model.input_size=500 must be divisible by 128.*model.input_size=384"):
        C.resolve(config_file=str(f))
    f.write_text("model: {backbone: hourglass52, input_size: 384, num_classes: 5}\n")
    assert C.resolve(config_file=str(f)).model.num_classes == 5
    with pytest.raises(ConfigError, match="train.schedule=step needs train.decay_boundaries"):
        C.resolve("shapes-tiny", overrides=["train.schedule=step"])
    with pytest.raises(ConfigError, match="runtime.precision must be one of"):
        C.resolve("shapes-tiny", overrides=["runtime.precision=fp8"])
    with pytest.raises(ConfigError, match="not both"):
        C.resolve("shapes-tiny", config_file=str(f))


def test_run_config_round_trip(tmp_path):
    cfg = C.resolve("hourglass104-coco", profile="gpu-x8", overrides=["eval.scales=0.5,1", "data.train=/x/*.tfrecord"])
    path = run_dir.write_config(cfg, str(tmp_path / "run"))
    assert path.endswith("config.yaml")
    again = run_dir.load_config(str(tmp_path / "run"))
    assert again == cfg and dataclasses.is_dataclass(again)
    # a checkpoint path inside the run directory finds the same config
    assert run_dir.load_config(str(tmp_path / "run" / "ckpt-100")) == cfg
    with pytest.raises(ConfigError, match="no config.yaml found"):
        run_dir.load_config(str(tmp_path / "elsewhere"))


def test_config_is_frozen():
    cfg = C.resolve("shapes-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.num_classes = 4  # type: ignore[misc]


def test_loss_defaults_are_the_reference_values():
    """CenterNet / Model Garden: focal alpha 2, beta 4; size weight 0.1, offset weight 1."""
    train = C.TrainConfig()
    assert (train.focal_alpha, train.focal_beta, train.size_weight, train.offset_weight) == (2.0, 4.0, 0.1, 1.0)
    for name in PRESETS:  # no preset drifts from them either
        t = C.resolve(name).train
        assert (t.focal_alpha, t.focal_beta, t.size_weight, t.offset_weight) == (2.0, 4.0, 0.1, 1.0), name
