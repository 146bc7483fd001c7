"""k-fold cross-validation: real folds, disjoint held-out parts, honest summary statistics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from facegender.cli import cli
from facegender.cv import METRICS, fold_splits
from facegender.data import Sample


@pytest.fixture(scope="module")
def cv_run(synthetic_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "run"
    args = [
        "cv",
        "--data",
        str(synthetic_dirs["utk"]),
        "--data",
        str(synthetic_dirs["folders"]),
        "--folds",
        "2",
        "--epochs",
        "1",
        "--model",
        "fgnet_s",
        "--image-size",
        "32",
        "--batch-size",
        "32",
        "--threads",
        "2",
        "--no-progress",
        "--cache-dir",
        str(tmp_path_factory.mktemp("cvcache")),
        "--out",
        str(out),
    ]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    return out, args, run.output


def test_cv_json_has_mean_and_std_per_metric(cv_run):
    out, _, output = cv_run
    report = json.loads((out / "cv.json").read_text())
    assert report["folds"] == 2 and len(report["per_fold"]) == 2
    for m in ("accuracy", "roc_auc", "f1", "ece"):
        vals = [f[m] for f in report["per_fold"]]
        assert report["summary"][m]["mean"] == pytest.approx(np.mean(vals))
        assert report["summary"][m]["std"] == pytest.approx(np.std(vals, ddof=1))
        assert f"{m:<10} {np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}" in output
    assert set(report["summary"]) <= set(METRICS)
    assert sum(f["n_test"] for f in report["per_fold"]) == report["n"] == 320


def test_folds_hold_out_every_image_once_and_never_train_on_it(cv_run):
    out, _, _ = cv_run
    held = []
    for k in range(2):
        with (out / f"fold_{k}" / "test.csv").open() as f:
            paths = [row["path"] for row in csv.DictReader(f)]
        held.append(set(paths))
        config = json.loads((out / f"fold_{k}" / "config.json").read_text())
        # the fold's checkpoint saw only the other fold (train + its own validation split)
        assert config["data"]["train"] + config["data"]["val"] == 320 - len(paths)
        assert config["status"] == "final"
    assert not held[0] & held[1]
    assert len(held[0] | held[1]) == 320


def test_cv_continues_without_retraining_finished_folds(cv_run):
    out, args, _ = cv_run
    before = json.loads((out / "cv.json").read_text())
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert run.output.count("already done") == 2
    assert json.loads((out / "cv.json").read_text())["summary"] == before["summary"]


def _samples(n_sources: int, per_source: int = 20) -> list[Sample]:
    return [
        Sample(f"s{s}_{i}.jpg", i % 2, f"src{s}")
        for s in range(n_sources)
        for i in range(per_source)
    ]


def test_stratified_folds_keep_the_label_and_source_mix():
    samples = _samples(2, 40)
    parts = fold_splits(samples, 4, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(80))
    for part in parts:
        labels = [samples[i].label for i in part]
        sources = [samples[i].source for i in part]
        assert labels.count(0) == labels.count(1) == 10
        assert sources.count("src0") == sources.count("src1") == 10


def test_grouping_by_source_holds_out_whole_sources():
    samples = _samples(4)
    parts = fold_splits(samples, 2, seed=0, group_by="source")
    seen = [{samples[i].source for i in part} for part in parts]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 4
    with pytest.raises(ValueError, match="at least 5 sources"):
        fold_splits(samples, 5, group_by="source")


def test_cv_rejects_an_explicit_validation_set(synthetic_dirs, tmp_path):
    from facegender.cv import cross_validate
    from facegender.train import TrainConfig

    cfg = TrainConfig(
        data=[str(synthetic_dirs["utk"])], val=[str(synthetic_dirs["folders"])], out=str(tmp_path)
    )
    with pytest.raises(ValueError, match="own validation"):
        cross_validate(cfg, folds=2)
