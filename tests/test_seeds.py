"""The seed-project recipes (recipes/seed-*.toml) and benchmarks/seeds.py on tiny generated data.

Every recipe trains one epoch through ``facegender train --config`` with its own image size,
model and augmentation, and its checkpoint loads and predicts; the grayscale one also runs as
ONNX through the same Predictor. The benchmark runs end to end in --smoke mode.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facegender.augment import AugmentConfig
from facegender.checkpoint import load_model, read_config
from facegender.cli import cli
from facegender.data import read_data
from facegender.evaluate import evaluate
from facegender.predict import Predictor
from facegender.recipe import load_recipe
from facegender.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
SEEDS = [p for p in RECIPES if p.stem.startswith("seed-")]


def test_there_are_five_seed_recipes():
    assert [p.stem for p in SEEDS] == [f"seed-00{i}" for i in range(5)]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_into_train_config_with_no_unknown_keys(recipe, tmp_path):
    raw = tomllib.loads(recipe.read_text())
    fields = set(TrainConfig.__dataclass_fields__) | set(AugmentConfig.__dataclass_fields__)
    assert set(raw) <= fields - {"augment"}, set(raw) - fields
    cfg = load_recipe(recipe, out=str(tmp_path))
    for key, value in raw.items():
        got = getattr(cfg.augment if key in AugmentConfig.__dataclass_fields__ else cfg, key)
        if key == "data":  # relative to the recipe file
            assert got == [str((recipe.parent / v).resolve()) for v in value]
        else:
            assert got == value, key
    assert cfg.out == str(tmp_path)


@pytest.mark.parametrize("recipe", SEEDS, ids=lambda p: p.stem)
def test_seed_recipe_spells_out_every_knob(recipe):
    """A seed recipe must not inherit the CLI's defaults (e.g. its default augmentation)."""
    raw = tomllib.loads(recipe.read_text())
    must = set(AugmentConfig.__dataclass_fields__) | {
        "model", "image_size", "grayscale", "epochs", "batch_size", "optimizer", "lr",
        "weight_decay", "warmup_epochs", "schedule", "label_smoothing", "ema", "patience",
        "tta_flip", "val_split", "seed", "data",
    }  # fmt: skip
    assert must <= set(raw), must - set(raw)
    header = recipe.read_text().split("\ndata =")[0]
    for part in ("What the seed did:", "What facegender reproduces:", "Deviations:"):
        assert part in header
    assert f"--config recipes/{recipe.stem}.toml --out runs/{recipe.stem}" in header


def test_unknown_recipe_key_is_refused_and_model_kwargs_table_works(synthetic_dirs, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'data = ["{synthetic_dirs["utk"]}"]\nepochz = 3\n')
    res = CliRunner().invoke(cli, ["train", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown key(s)" in res.output and "epochz" in res.output
    with pytest.raises(ValueError, match="epochz"):
        load_recipe(bad)
    good = tmp_path / "good.toml"
    good.write_text(
        f'data = ["{synthetic_dirs["utk"]}"]\nmodel = "seed_cnn"\n'
        "[model_kwargs]\nwidths = [8, 16, 32]\nhidden = 16\n"
    )
    assert load_recipe(good).model_kwargs == {"widths": [8, 16, 32], "hidden": 16}


def _tiny_data(recipe: Path, dirs: dict) -> list[str]:
    """The generated folder standing in for each of the recipe's sources."""
    stand_in = {"utkface": dirs["utk"], "kaggle-gender": dirs["folders"]}
    return [str(stand_in[Path(d).name]) for d in tomllib.loads(recipe.read_text())["data"]]


@pytest.fixture(scope="module")
def seed_runs(synthetic_dirs, tmp_path_factory):
    """Each seed recipe trained for one epoch on at most 32 generated faces, via the CLI."""
    root = tmp_path_factory.mktemp("seed_runs")
    runs = {}
    for recipe in SEEDS:
        out = root / recipe.stem
        args = ["train", "--config", str(recipe), "--epochs", "1", "--max-train", "32"]
        for d in _tiny_data(recipe, synthetic_dirs):
            args += ["--data", d]
        args += ["--no-progress", "--cache-dir", str(root / "cache"), "--out", str(out)]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (recipe.stem, res.output)
        runs[recipe.stem] = out
    return runs


@pytest.mark.parametrize("recipe", SEEDS, ids=lambda p: p.stem)
def test_seed_recipe_trains_loads_and_predicts(recipe, seed_runs, synthetic_dirs):
    out = seed_runs[recipe.stem]
    raw = tomllib.loads(recipe.read_text())
    config = read_config(out)
    assert config["status"] == "final" and config["model"]["name"] == raw["model"]
    assert config["preprocess"]["image_size"] == raw["image_size"]
    assert config["preprocess"]["grayscale"] == raw["grayscale"]
    assert config["train_args"]["augment"] == {
        k: raw[k] for k in AugmentConfig.__dataclass_fields__
    }
    assert config["data"]["train"] == 32 and config["training"]["epochs_run"] == 1
    for name in ("model.safetensors", "curves.png", "history.csv", "validation.csv"):
        assert (out / name).is_file(), name
    model = load_model(out)
    assert model.in_chans == (1 if raw["grayscale"] else 3)
    # the checkpoint predicts through the one Predictor, and the common evaluation format
    # reproduces the validation metrics train stored
    image = read_data(_tiny_data(recipe, synthetic_dirs)).samples[0].path
    result = Predictor(model=out, detect=False).predict(image)
    assert result.status == "ok" and len(result.faces) == 1
    assert 0.0 <= result.faces[0].female_probability <= 1.0
    ev = evaluate([str(out / "validation.csv")], model=out, cache=False)
    assert ev["n"] == config["metrics"]["validation"]["n"]
    assert ev["accuracy"] == pytest.approx(config["metrics"]["validation"]["accuracy"])


def test_grayscale_recipe_runs_as_onnx_through_the_same_predictor(seed_runs, synthetic_dirs):
    from facegender.export import export_onnx

    out = seed_runs["seed-002"]
    assert read_config(out)["preprocess"]["grayscale"] is True
    export_onnx(out)
    images = [s.path for s in read_data([str(synthetic_dirs["utk"])]).samples[:12]]
    by_onnx = Predictor(model=out, detect=False, backend="onnx")
    by_torch = Predictor(model=out, detect=False, backend="torch")
    assert by_onnx.classifier.backend == "onnx" and by_torch.classifier.backend == "torch"
    shape = by_onnx.classifier.session.get_inputs()[0].shape
    assert shape[1:] == [1, 48, 48]
    p_onnx = [r.faces[0].female_probability for r in by_onnx.predict_batch(images)]
    p_torch = [r.faces[0].female_probability for r in by_torch.predict_batch(images)]
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)


def test_benchmark_smoke_run_scores_every_model_on_one_unleaked_split(tmp_path, load_benchmark):
    bench = load_benchmark("seeds")
    out = tmp_path / "seeds"
    argv = ["--smoke", "--only", "seed-002", "--no-report", "--out-dir", str(out)]
    argv += ["--note", "trained beside two other jobs"]
    assert bench.main(argv) == 0
    summary = json.loads((out / "seeds.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert list(rows) == ["default", "seed-002"]
    held = read_data([str(out / "common" / "heldout.csv")]).samples
    held_paths = {s.path for s in held}
    assert summary["split"]["heldout"] == len(held) > 0
    assert {s.source for s in held} == {"utkface", "kaggle-gender", "fairface"}
    # the seed trained on UTKFace images only, none of them held out
    pool = read_data([str(out / "common" / "pool-utkface.csv")]).samples
    assert (
        pool and {s.source for s in pool} == {"utkface"} and not held_paths & {s.path for s in pool}
    )
    seed_cfg = read_config(out / "seed-002")
    assert seed_cfg["train_args"]["data"] == [str(out / "common" / "pool-utkface.csv")]
    assert seed_cfg["preprocess"]["grayscale"] is True
    for name, row in rows.items():
        ev = json.loads((Path(row["evaluation"])).read_text())
        assert ev["n"] == len(held) == row["n"], name
        assert row["accuracy"] == ev["accuracy"]
        assert set(row["per_source"]) == {"utkface", "kaggle-gender", "fairface"}
        assert row["parameters"] > 0 and row["size_mb"] > 0
    assert rows["seed-002"]["claim"]["accuracy"] == 0.90
    doc = (out / "seeds.md").read_text()
    assert "| seed-002 | `seed_cnn` | 48 px gray | utkface |" in doc
    assert "python benchmarks/seeds.py --smoke" in doc and "mean nothing" in doc
    assert "**Conditions**: trained beside two other jobs" in doc
    # a default model is only reused when it held out this very split
    cfg = load_recipe(ROOT / "recipes" / "default.toml", out="unused")
    smoke_cfg = dataclasses.replace(cfg, data=bench.repoint(cfg.data, out / "smoke-data"))
    bench.check_default(out / "default", smoke_cfg, len(held))
    with pytest.raises(SystemExit, match="val_split 0.1 is not 0.2"):
        bench.check_default(
            out / "default", dataclasses.replace(smoke_cfg, val_split=0.2), len(held)
        )
    with pytest.raises(SystemExit, match="held out"):
        bench.check_default(out / "default", smoke_cfg, len(held) + 1)
    # a second run refuses to overwrite, and --reuse scores the finished runs again
    with pytest.raises(SystemExit, match="--reuse"):
        bench.main(argv)
    assert bench.main([*argv, "--reuse"]) == 0
    again = {r["name"]: r for r in json.loads((out / "seeds.json").read_text())["rows"]}
    assert again["seed-002"]["reused"] is True
    assert again["seed-002"]["accuracy"] == rows["seed-002"]["accuracy"]
