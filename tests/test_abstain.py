"""Abstaining (``--min-confidence``): the rule, the CLI/Python/API, and the risk-coverage curve.

The curve test has a reason to hold, not luck: the held-out faces are generated with a known
difficulty (from clean to nearly washed out in grey and noise), so the tiny model is unsure and
often wrong on the hard ones and sure and right on the clean ones (about 80 % accurate overall);
raising P drops the hard ones first. 1,200 faces keep the sampling noise (about 1 point) below
the gaps between the thresholds tested (0.1 apart).
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from facegender.abstain import (
    UNCERTAIN,
    check_min_confidence,
    coverage_at,
    curve,
    gender_label,
    risk_coverage,
)
from facegender.cli import cli
from facegender.evaluate import evaluate
from facegender.predict import Predictor
from facegender.synthetic import synthetic_face


def test_rule_and_range():
    assert gender_label(0.7) == "female" and gender_label(0.3) == "male"
    assert gender_label(0.7, 0.8) == UNCERTAIN and gender_label(0.1, 0.8) == "male"
    assert gender_label(0.8, 0.8) == "female"  # at the threshold: answered
    assert check_min_confidence(None) is None
    for bad in (0.3, 1.2, float("nan")):
        with pytest.raises(ValueError, match="between 0.5"):
            check_min_confidence(bad)


def test_curve_and_coverage_by_hand():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.95, 0.6, 0.3, 0.1])  # right, wrong, wrong, right
    c = curve(y, p, thresholds=(0.5, 0.65, 0.8, 0.99))
    assert c["answered"] == [4, 3, 2, 0]
    assert c["accuracy"][:3] == [0.5, pytest.approx(2 / 3), 1.0] and c["accuracy"][3] is None
    assert coverage_at(y, p, 0.99) == 0.5  # the two most confident are right
    assert coverage_at(y, p, 0.5) == 1.0


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(11)
    return [np.asarray(synthetic_face(i % 2, rng)) for i in range(24)]


def test_predictor_abstains_below_threshold_and_keeps_probability(tiny_checkpoint, faces):
    plain = Predictor(tiny_checkpoint, detect=False, threads=1).predict_batch(faces)
    p = np.array([r.faces[0].female_probability for r in plain])
    assert {r.faces[0].gender for r in plain} <= {"male", "female"}  # default: contract holds
    t = float(np.quantile(np.maximum(p, 1 - p), 0.5))  # half the faces fall below
    strict = Predictor(tiny_checkpoint, detect=False, threads=1, min_confidence=t)
    got = strict.predict_batch(faces)
    for r0, r in zip(plain, got, strict=True):
        f0, f = r0.faces[0], r.faces[0]
        assert f.female_probability == f0.female_probability
        sure = max(f.female_probability, 1 - f.female_probability) >= t
        assert f.gender == (f0.gender if sure else UNCERTAIN)
    assert 0 < sum(r.faces[0].gender == UNCERTAIN for r in got) < len(got)
    with pytest.raises(ValueError):
        Predictor(tiny_checkpoint, detect=False, min_confidence=0.2)


def test_cli_min_confidence(tiny_checkpoint, tmp_path, faces):
    from PIL import Image

    for i, a in enumerate(faces[:6]):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    args = ["predict", str(tmp_path), "--model", str(tiny_checkpoint), "--no-detect"]
    r = CliRunner().invoke(cli, [*args, "--format", "json", "--min-confidence", "1.0"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["faces"][0]["gender"] for row in rows] == [UNCERTAIN] * 6
    assert all(0 <= row["faces"][0]["female_probability"] <= 1 for row in rows)
    bad = CliRunner().invoke(cli, [*args, "--min-confidence", "0.2"])
    assert bad.exit_code != 0 and "0.5" in bad.output


def test_api_min_confidence_query_parameter(tiny_checkpoint, faces):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from facegender.serve import create_app

    buf = io.BytesIO()
    Image.fromarray(faces[0]).save(buf, "PNG")
    pred = Predictor(tiny_checkpoint, detect=False, threads=1)
    with TestClient(create_app(predictor=pred)) as c:
        plain = c.post("/v1/predict", files={"file": ("a.png", buf.getvalue(), "image/png")})
        sure = c.post(
            "/v1/predict?min_confidence=1.0",
            content=buf.getvalue(),
            headers={"Content-Type": "image/png"},
        )
        bad = c.post(
            "/v1/predict?min_confidence=high",
            content=buf.getvalue(),
            headers={"Content-Type": "image/png"},
        )
    assert plain.status_code == 200 and plain.json()["faces"][0]["gender"] in ("male", "female")
    assert sure.status_code == 200 and sure.json()["faces"][0]["gender"] == UNCERTAIN
    p0 = plain.json()["faces"][0]["female_probability"]
    assert sure.json()["faces"][0]["female_probability"] == p0
    assert bad.status_code == 400 and "min_confidence" in bad.json()["error"]
    assert pred.min_confidence is None  # a request's threshold never sticks to the predictor


def write_graded_faces(root, n: int, seed: int):
    """UTKFace-named generated faces, each washed out by a random amount (0: clean, 1: almost
    only grey and noise): a held-out set whose difficulty varies for a known reason."""
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 2
        a = np.asarray(synthetic_face(label, rng), dtype=np.float32)
        amount = rng.uniform(0, 1)
        noisy = a.mean() + (a - a.mean()) * (1 - 0.97 * amount)
        noisy += rng.normal(0, 40, a.shape) * amount
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        img.save(root / f"30_{label}_0_20170101{i:09d}.jpg.chip.jpg", quality=92)
    return root


def test_accuracy_on_answered_faces_rises_with_threshold(tiny_checkpoint, tmp_path):
    held_out = write_graded_faces(tmp_path / "heldout", n=1200, seed=5)  # never trained on
    result = evaluate([str(held_out)], model=tiny_checkpoint, cache=False)
    rc = result["risk_coverage"]
    thresholds, acc = rc["thresholds"], rc["overall"]["accuracy"]
    cov = rc["overall"]["coverage"]
    tested = [thresholds.index(t) for t in (0.5, 0.6, 0.7, 0.8, 0.9)]
    assert all(rc["overall"]["answered"][i] >= 200 for i in tested)
    pairs = list(zip(tested, tested[1:], strict=False))
    assert all(acc[b] > acc[a] for a, b in pairs), [acc[i] for i in tested]
    assert acc[tested[-1]] - acc[tested[0]] > 0.03  # a real rise, not a flat line
    assert all(cov[b] < cov[a] for a, b in pairs) and cov[0] == 1.0
    assert acc[0] == pytest.approx(result["accuracy"])
    assert "age" in rc["groups"] and "source" in rc["groups"]


def test_risk_coverage_groups_partition_the_faces():
    from facegender.data.samples import Sample

    rng = np.random.default_rng(0)
    samples = [Sample(f"{i}.jpg", i % 2, "a" if i < 30 else "b", age=5 + i) for i in range(50)]
    y = np.array([s.label for s in samples])
    p = rng.uniform(size=50)
    rc = risk_coverage(samples, y, p)
    src = rc["groups"]["source"]
    assert src["a"]["n"] + src["b"]["n"] == rc["overall"]["n"] == 50
    assert sum(g["answered"][3] for g in src.values()) == rc["overall"]["answered"][3]
