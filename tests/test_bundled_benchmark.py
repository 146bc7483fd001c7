"""benchmarks/bundled_model.py's tables from faked predictions: no data set or model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegender.data.samples import Sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bundled_model")


def test_age_tables_show_calibration_beside_its_floor(bench, capsys):
    rng = np.random.default_rng(0)
    n = 600
    samples = [
        Sample(f"{i}.jpg", i % 2, "utkface", age=int(rng.integers(1, 80)), race="White")
        if i < 400
        else Sample(f"{i}.jpg", i % 2, "kaggle-gender")
        for i in range(n)
    ]
    y = np.array([s.label for s in samples])
    sure = np.where(y == 1, 0.95, 0.05)
    guess = np.array([s.age is not None and s.age <= 12 for s in samples])
    p_own = np.where(guess, np.where(rng.random(n) < 0.5, 0.95, 0.05), sure)  # sure, but guessing
    r = bench.summarise(samples, y, {"own": p_own, "aligned": sure})
    r.update(no_face_through_predict=0, backend="onnx")
    ages = r["sources"]["utkface"]["own"]["ece_by_age"]
    assert ages["4-12"]["overconfidence"] > 0.2  # 95 % sure of a coin toss
    assert ages["4-12"]["overconfidence_ci95"][0] > 0.1
    assert abs(ages["20-39"]["overconfidence"]) < 0.06
    assert 0 < ages["20-39"]["ece_floor"] < ages["4-12"]["ece"]
    bench.print_tables(r)
    out = capsys.readouterr().out
    assert "| utkface age |" in out and "ECE floor" in out
    assert "kaggle-gender age" not in out  # no ages, no table


def test_black_share_and_the_gap_by_missing_pixels(bench):
    crops = np.full((3, 10, 10, 3), 128, np.uint8)
    crops[1, 8:] = 0  # bottom 2 rows of 10 outside the image: black fill
    crops[2, :, :5] = 0
    assert bench.black_share(crops).tolist() == [0.0, 0.2, 0.5]
    samples = [Sample(f"{i}.jpg", i % 2, "utkface") for i in range(4)]
    y = np.array([0, 1, 0, 1])
    own = np.array([0.1, 0.9, 0.1, 0.9])  # all right
    pred = np.array([0.1, 0.9, 0.9, 0.1])  # the two crops with missing pixels wrong
    g = bench.gap_by_outside(samples, y, {"own": own, "aligned": pred}, np.array([0, 0, 0.3, 0.5]))
    bins = g["utkface"]["bins"]
    assert bins["0.00-0.02"] == {"n": 2, "own": 1.0, "predict": 1.0, "difference": 0.0}
    assert bins["0.10-1.00"]["n"] == 2 and bins["0.10-1.00"]["difference"] == -1.0
