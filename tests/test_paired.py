"""The paired test (metrics.mcnemar, holm) and benchmarks/paired.py on generated faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facegender.data.samples import Sample
from facegender.metrics import holm, mcnemar


def test_mcnemar_counts_only_discordant_faces():
    a = np.array([True] * 50 + [False] * 10 + [True] * 10)
    b = np.array([True] * 50 + [True] * 10 + [False] * 10)
    t = mcnemar(a, b)
    assert (t["n"], t["a_only"], t["b_only"]) == (70, 10, 10)
    assert t["p_value"] == pytest.approx(1.0)
    # 10 discordant faces, all for B: two-sided exact binomial, 2 / 2**10
    t = mcnemar(np.zeros(30, bool), np.r_[np.ones(10, bool), np.zeros(20, bool)])
    assert t["p_value"] == pytest.approx(2 / 2**10)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same faces"):
        mcnemar([True], [True, False])


def test_holm_is_monotone_and_never_below_raw():
    p = [0.01, 0.04, 0.03, 0.5]
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert all(h >= r for h, r in zip(adjusted, p, strict=True))


@pytest.fixture(scope="module")
def benches(load_benchmark):
    return load_benchmark("bundled_model"), load_benchmark("paired")


def _write(bench, path, samples, data_dir, p):
    bench.write_faces(str(path), samples, [str(data_dir)], {"own": p, "aligned": p})


def test_paired_finds_a_real_difference_and_not_a_fake_one(benches, tmp_path):
    bundled, paired = benches
    data = tmp_path / "fairface"
    rng = np.random.default_rng(0)
    n = 600
    samples = [
        Sample(str(data / f"train/{i}.webp"), i % 2, "fairface", race=("Black", "White")[i % 3 > 0])
        for i in range(n)
    ]
    y = np.array([s.label for s in samples])
    right = np.where(y == 1, 0.9, 0.1)
    wrong = 1 - right
    noisy = np.where(rng.random(n) < 0.8, right, wrong)  # A: 80 % right
    black = np.array([s.race == "Black" for s in samples])
    fixed = np.where(black, right, noisy)  # B: every Black face right, the others as A
    _write(bundled, tmp_path / "a.faces.csv.gz", samples, data, noisy)
    _write(bundled, tmp_path / "b.faces.csv.gz", samples, data, fixed)
    out = tmp_path / "paired.json"
    assert paired.main([str(tmp_path / "a.faces.csv.gz"), str(tmp_path / "b.faces.csv.gz"),
                        "--json", str(out)]) == 0  # fmt: skip
    rows = {r["group"]: r for r in json.loads(out.read_text())["own"]}
    assert rows["all"]["n"] == n and rows["all"]["a_only"] == 0
    for sex in ("male", "female"):
        assert rows[f"fairface Black {sex}"]["p_holm"] < 0.01
        assert rows[f"fairface White {sex}"]["b_only"] == 0
        assert rows[f"fairface White {sex}"]["p_value"] == 1.0


def test_paired_refuses_files_from_different_splits(benches, tmp_path):
    bundled, paired = benches
    data = tmp_path / "utkface"
    s = [Sample(str(data / f"{i}.jpg"), i % 2, "utkface", age=30) for i in range(4)]
    p = np.full(4, 0.7)
    _write(bundled, tmp_path / "a.faces.csv.gz", s, data, p)
    flipped = [Sample(x.path, 1 - x.label, x.source, age=30) for x in s]
    _write(bundled, tmp_path / "b.faces.csv.gz", flipped, data, p)
    with pytest.raises(SystemExit, match="different labels"):
        paired.main([str(tmp_path / "a.faces.csv.gz"), str(tmp_path / "b.faces.csv.gz")])
    rows = paired.read_faces(tmp_path / "a.faces.csv.gz")
    assert set(rows) == {f"utkface/{i}.jpg" for i in range(4)}  # names relative to the data root
    assert rows["utkface/1.jpg"]["age_group"] == "20-39"


def test_paired_crops_finds_a_gap_through_predict_in_one_age_band(benches, tmp_path):
    bundled, paired = benches
    data = tmp_path / "utkface"
    ages = [8] * 60 + [30] * 200
    samples = [Sample(str(data / f"{i}.jpg"), i % 2, "utkface", age=a) for i, a in enumerate(ages)]
    y = np.array([s.label for s in samples])
    own = np.where(y == 1, 0.8, 0.2)
    child = np.array(ages) < 13
    through = np.where(child & (np.arange(len(y)) % 3 == 0), 1 - own, own)  # 20 children lost
    path = tmp_path / "m.faces.csv.gz"
    bundled.write_faces(str(path), samples, [str(data)], {"own": own, "aligned": through})
    out = tmp_path / "crops.json"
    assert paired.main(["--crops", str(path), "--json", str(out)]) == 0
    rows = {r["group"]: r for r in json.loads(out.read_text())["own vs predict"]}
    child_band = next(g for g in rows if g.startswith("utkface age 4"))
    assert (rows[child_band]["a_only"], rows[child_band]["b_only"]) == (20, 0)
    assert rows[child_band]["p_value"] < 1e-5
    assert rows["utkface age 20-39"]["a_only"] == rows["utkface age 20-39"]["b_only"] == 0
    with pytest.raises(SystemExit):
        paired.main(["--crops", str(path), str(path)])
