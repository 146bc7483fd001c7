"""One training config: the CLI's options come from TrainConfig's fields, the defaults are equal,
bad values are refused when the config is built (before any image is read), and ``facegender
train`` trains the very model the Python API trains with the same arguments."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from facegender.cli import cli
from facegender.cli import train as train_cmd
from facegender.config import AugmentConfig, TrainConfig, flat_keys
from facegender.options import train_config
from facegender.recipe import load_recipe, read_recipe


def _cli_config(args: list[str]) -> TrainConfig:
    ctx = train_cmd.make_context("train", args)
    opts = dict(ctx.params)
    opts.pop("resume")
    return train_config(opts)


def test_cli_defaults_are_train_config_defaults():
    assert _cli_config(["--data", "d", "--out", "o"]) == TrainConfig(data=["d"], out="o")
    # the augmentation `facegender train` has always used is the dataclass's own default
    assert AugmentConfig() == AugmentConfig(
        flip=0.5, rotation=10, shift=0.08, shear=5, zoom=0.1, brightness=0.2, contrast=0.2
    )
    defaults = {p.name: p.default for p in train_cmd.params}
    for f in [*fields(TrainConfig), *fields(AugmentConfig)]:
        if f.name in ("augment", "data", "out", "val", "teacher", "model_kwargs"):  # lists: ()
            continue
        want = getattr(AugmentConfig() if f.name in AugmentConfig.__dataclass_fields__ else
                       TrainConfig(data=["d"], out="o"), f.name)  # fmt: skip
        assert defaults[f.name] == want, f.name


def test_every_setting_is_an_option_with_help_and_its_choices():
    params = {p.name: p for p in train_cmd.params}
    assert set(params) == flat_keys() | {"config", "resume"}
    assert all(p.help for p in params.values()), [n for n, p in params.items() if not p.help]
    assert list(params["schedule"].type.choices) == ["cosine", "constant"]
    assert list(params["face_crop"].type.choices) == ["own", "aligned", "both"]
    assert params["grayscale"].secondary_opts == ["--rgb"]
    cv_params = {p.name for p in cli.commands["cv"].params}
    assert cv_params == (set(params) - {"val", "resume"}) | {"folds", "group_by"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": "step"}, "unknown schedule 'step'"),
        ({"optimizer": "adamw2"}, "did you mean adamw?"),
        ({"balance": "race"}, "unknown balance"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"face_crop": "box"}, "unknown face_crop"),
        ({"device": "tpu"}, "unknown device"),
        ({"model": "fgnet_xl"}, "unknown model 'fgnet_xl'"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"val_split": 1.0}, "val_split must be < 1"),
        ({"ema": 1.0}, "ema must be < 1"),
        ({"batch_size": "32"}, "batch_size must be int"),
        ({"patience": True}, "patience must be int"),
        ({"augment": {"flip": 1.5}}, "flip must be <= 1"),
        ({"data": []}, "no training data"),
    ],
)
def test_a_bad_setting_is_refused_when_the_config_is_built(change, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        TrainConfig(**{"data": ["d"], "out": "o", **change})


def test_numbers_are_coerced_to_the_declared_type():
    cfg = TrainConfig(data="d", out="o", lr=1, augment=AugmentConfig(rotation=np.int64(12)))
    assert cfg.data == ["d"] and type(cfg.lr) is float and type(cfg.augment.rotation) is float


def test_the_cli_refuses_a_bad_setting_before_reading_any_data(monkeypatch, tmp_path):
    import facegender.train as tr

    def no_reading(*_a, **_k):
        raise AssertionError("data was read")

    monkeypatch.setattr(tr, "read_data", no_reading)
    for bad in (["--lr", "0"], ["--model", "fgnet_xl"], ["--flip", "2"]):
        args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *bad]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "Error" in res.output, (bad, res.output)
        assert not (tmp_path / "o").exists()
    recipe = tmp_path / "r.toml"
    recipe.write_text('schedule = "step"\n')
    res = CliRunner().invoke(cli, ["train", "--config", str(recipe), "--data", "x", "--out", "o"])
    assert res.exit_code == 2 and "step" in res.output


def test_recipe_keys_are_checked_with_a_suggestion_and_paths_made_absolute(tmp_path):
    (tmp_path / "r.toml").write_text('data = "faces"\nepochz = 3\nrotaton = 5.0\n')
    with pytest.raises(ValueError, match=r"epochz \(did you mean epochs\?\), rotaton \(did"):
        read_recipe(tmp_path / "r.toml")
    (tmp_path / "r.toml").write_text('[train]\ndata = "faces"\nrotation = 4\n')
    assert read_recipe(tmp_path / "r.toml") == {"data": [str(tmp_path / "faces")], "rotation": 4}
    cfg = load_recipe(tmp_path / "r.toml", out="o", epochs=2, flip=0.0)
    assert (cfg.augment.rotation, cfg.augment.flip, cfg.epochs, cfg.out) == (4.0, 0.0, 2, "o")
    with pytest.raises(ValueError, match="epoch \\(did you mean epochs"):
        load_recipe(tmp_path / "r.toml", epoch=3)


def test_config_recipe_and_options_modules_import_neither_torch_nor_the_cli():
    code = (
        "import sys, facegender.config, facegender.recipe, facegender.options; "
        "print('torch' in sys.modules, 'facegender.cli' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cli_and_python_api_train_the_same_weights(synthetic_dirs, tmp_path):
    """Same arguments, default augmentation: byte-identical weights and the same train_args."""
    from facegender.checkpoint import read_config
    from facegender.train import train

    common = {"model": "fgnet_s", "image_size": 16, "epochs": 2, "batch_size": 32}
    common |= {"max_train": 64, "threads": 1, "ema": 0.9}
    args = ["train", "--data", str(synthetic_dirs["utk"]), "--no-progress"]
    for k, v in common.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "cli")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    cfg = TrainConfig(
        data=[str(synthetic_dirs["utk"])],
        out=str(tmp_path / "api"),
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        **common,
    )
    train(cfg, log=lambda m: None)
    a = load_file(str(tmp_path / "cli" / "model.safetensors"))
    b = load_file(str(tmp_path / "api" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    args_cli = read_config(tmp_path / "cli")["train_args"]
    args_api = read_config(tmp_path / "api")["train_args"]
    assert {**args_cli, "out": None} == {**args_api, "out": None}
    assert args_api["augment"]["rotation"] == 10.0  # the default augmentation ran in both
