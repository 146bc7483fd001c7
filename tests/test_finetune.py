"""``train --init``: architecture from the checkpoint, clear errors, weights really carried over,
and benchmarks/finetune.py end to end on generated data (--smoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from facegender.checkpoint import build_model, load_model, read_config
from facegender.cli import cli
from facegender.finetune import FINETUNE_DEFAULTS, apply_init
from facegender.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def test_init_takes_architecture_and_short_schedule(tiny_checkpoint):
    cfg = apply_init(TrainConfig(data=["x"], out="y", init=str(tiny_checkpoint)))
    assert (cfg.model, cfg.image_size) == ("fgnet_s", 32)  # not the fgnet_m / 64 defaults
    assert cfg.epochs == FINETUNE_DEFAULTS["epochs"] and cfg.lr == FINETUNE_DEFAULTS["lr"]
    kept = apply_init(TrainConfig(data=["x"], out="y", init=str(tiny_checkpoint), epochs=2))
    assert kept.epochs == 2 and apply_init(kept) is kept
    bundled = apply_init(TrainConfig(data=["x"], out="y", init="default"))
    conf = read_config(None)
    assert bundled.model == conf["model"]["name"]
    assert bundled.image_size == conf["preprocess"]["image_size"]
    same = TrainConfig(
        data=["x"], out="y", init=str(tiny_checkpoint), model="fgnet_s", image_size=32
    )
    assert apply_init(same, {"model", "image_size"}).model == "fgnet_s"  # agreeing is fine


def test_explicit_mismatch_is_a_clear_error(tiny_checkpoint, synthetic_dirs, tmp_path):
    with pytest.raises(ValueError, match="image_size=48"):
        apply_init(TrainConfig(data=["x"], out="y", init=str(tiny_checkpoint), image_size=48))
    base = ["train", "--data", str(synthetic_dirs["utk"]), "--init", str(tiny_checkpoint)]
    r = CliRunner().invoke(cli, [*base, "--model", "fgnet_m", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "fgnet_s" in r.output and "model='fgnet_m'" in r.output
    r = CliRunner().invoke(cli, [*base, "--image-size", "48", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "image_size=48" in r.output
    for bad in ("fast", str(tmp_path / "nothing")):
        r = CliRunner().invoke(cli, ["train", "--data", "x", "--init", bad, "--out", "o"])
        assert r.exit_code == 2 and "--init" in r.output


def test_finetune_starts_from_the_checkpoint_weights(tiny_checkpoint, synthetic_dirs, tmp_path):
    out = tmp_path / "ft"
    r = CliRunner().invoke(
        cli,
        ["train", "--data", str(synthetic_dirs["folders"]), "--init", str(tiny_checkpoint),
         "--epochs", "1", "--lr", "1e-9", "--max-train", "32", "--threads", "2",
         "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    args = json.loads((out / "config.json").read_text())["train_args"]
    assert (args["model"], args["image_size"], args["init"]) == (
        "fgnet_s",
        32,
        str(tiny_checkpoint),
    )
    assert args["warmup_epochs"] == FINETUNE_DEFAULTS["warmup_epochs"]  # not given: the default
    start, end = load_model(tiny_checkpoint).state_dict(), load_model(out).state_dict()
    convs = [k for k, v in start.items() if v.ndim == 4]
    assert convs and all(torch.allclose(start[k], end[k], atol=1e-5) for k in convs)
    fresh = build_model(read_config(tiny_checkpoint))  # what a run without --init starts from
    assert not all(torch.allclose(fresh.state_dict()[k], start[k]) for k in convs)


def test_finetune_via_python_api_learns(tiny_checkpoint, synthetic_dirs, tmp_path):
    cfg = TrainConfig(
        data=[str(synthetic_dirs["folders"])],
        out=str(tmp_path / "py"),
        init=str(tiny_checkpoint),
        epochs=1,
        threads=2,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
    )
    train(cfg, log=lambda m: None)
    conf = json.loads((tmp_path / "py" / "config.json").read_text())
    assert conf["train_args"]["lr"] == FINETUNE_DEFAULTS["lr"]
    assert conf["metrics"]["validation"]["accuracy"] >= 0.8  # one low-lr epoch keeps what it knew


def test_finetune_benchmark_smoke(tmp_path, load_benchmark):
    mod = load_benchmark("finetune")
    assert mod.main(["--smoke", "--work", str(tmp_path), "--threads", "2"]) == 0
    summary = json.loads((tmp_path / "finetune_smoke.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert set(rows) == {"base", "finetuned", "scratch"}
    assert all(r["left_out_heldout"]["n"] == summary["n_test"] for r in rows.values())
    assert rows["finetuned"]["train_args"]["init"] == str(tmp_path / "base")
    assert rows["scratch"]["train_args"]["init"] is None
    assert isinstance(summary["finetune_beats_base_and_scratch"], bool)
