"""benchmarks/calibration_crossfit.py on stored logits: no data set or model needed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from facegender.data.samples import Sample
from facegender.labels import AGE_CLASSES
from facegender.metrics import overconfidence

K = len(AGE_CLASSES)


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("calibration_crossfit")


def _faces(n: int, seed: int = 0):
    """Adults calibrated, children (the head sure of "3-9") over-confident 3x; two crops."""
    rng = np.random.default_rng(seed)
    child = rng.random(n) < 0.3
    samples = [
        Sample(f"{i}.jpg", 0, "utkface" if i % 2 else "fairface", age=6 if c else 35)
        for i, c in enumerate(child)
    ]
    y = np.empty(n, dtype=int)
    z, a = {}, {}
    true = rng.normal(0, 3.0, n) * np.where(child, 0.4, 1.0)
    y[:] = rng.random(n) < 1 / (1 + np.exp(-true))
    for crop in ("own", "aligned"):
        z[crop] = (true + rng.normal(0, 0.1, n)) * np.where(child, 3.0, 1.0)
        a[crop] = np.zeros((n, K))
        a[crop][np.arange(n), np.where(child, 1, 3)] = 8.0
    return samples, y, z, a, child


def test_folds_split_every_stratum_evenly(bench):
    samples, y, *_ = _faces(2_003)
    fold = bench.folds_of(samples, y, 5)
    assert set(fold) == set(range(5))
    keys = zip(samples, y, fold, strict=True)
    strata = Counter((s.source, s.age, int(label), int(f)) for s, label, f in keys)
    for key in {k[:3] for k in strata}:
        sizes = [strata.get((*key, f), 0) for f in range(5)]
        assert max(sizes) - min(sizes) <= 1
    assert np.array_equal(fold, bench.folds_of(samples, y, 5))  # deterministic


def test_cross_fitted_age_scales_calibrate_children_one_temperature_cannot(bench):
    samples, y, z, a, child = _faces(20_000)
    cal = bench.calibrated(z, a, y, bench.folds_of(samples, y, 5))
    for crop in ("own", "aligned"):
        kids = {v: overconfidence(y[child], cal[v][crop][child]) for v in bench.VARIANTS}
        assert kids["raw"] > 0.08  # the children's logits are 3x too sharp
        assert kids["temperature"] > 0.03  # one temperature sits between the two groups
        assert abs(kids["cross_fitted"]) < 0.015 and abs(kids["in_sample"]) < 0.015
        predicted = {v: cal[v][crop] >= 0.5 for v in bench.VARIANTS}
        assert all(np.array_equal(predicted["raw"], p) for p in predicted.values())


def test_summary_reports_every_variant_per_source_and_age(bench):
    samples, y, z, a, _ = _faces(1_000)
    cal = bench.calibrated(z, a, y, bench.folds_of(samples, y, 3))
    out = bench.summarise(samples, y, cal)
    assert set(out) == {"own", "aligned"}
    ages = out["own"]["sources"]["utkface"]["age"]
    assert list(ages) == ["4-12", "20-39"]  # in age order, only the bands present
    row = ages["4-12"]
    assert row["n"] == sum(1 for s in samples if s.source == "utkface" and s.age == 6)
    for v in bench.VARIANTS:
        lo, hi = row[v]["overconfidence_ci95"]
        assert lo <= row[v]["overconfidence"] <= hi
