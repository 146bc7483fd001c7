"""The evaluation report: every section present, every embedded figure a real PNG, figures agree."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegender.cli import cli
from facegender.metrics import (
    bootstrap_interval,
    calibration_bins,
    ece_noise_floor,
    expected_calibration_error,
    overconfidence,
)
from facegender.report import SECTIONS, headline, write_report


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    from facegender.synthetic import write_utkface_folder

    root = write_utkface_folder(tmp_path_factory.mktemp("evalset") / "utk", n=60, seed=7)
    (root / "30_1_0_20170101000000999.jpg.chip.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def cli_report(tiny_checkpoint, eval_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result_json = out / "result.json"
    run = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(eval_dir),
            "--model",
            str(tiny_checkpoint),
            "--no-cache",
            "--format",
            "json",
            "--out",
            str(result_json),
            "--report",
            str(out / "rep"),
        ],
    )
    assert run.exit_code == 0, run.output
    return out / "rep", json.loads(result_json.read_text())


def test_html_is_self_contained_with_every_section(cli_report):
    rep, result = cli_report
    text = (rep / "report.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text, sid
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched
    assert "<script" not in text and "<link" not in text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # confusion, roc, pr, reliability, 4 group charts, samples, mistakes?, training curves
    assert len(uris) >= 10
    for data in uris:
        img = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert img.format == "PNG" and min(img.size) > 50
    # the tiny checkpoint folder has curves.png: the training section embeds it
    training = text.split('<section id="training">')[1].split("</section>")[0]
    assert "data:image/png;base64," in training and "best epoch" in training


def test_markdown_sections_images_and_numbers(cli_report):
    rep, result = cli_report
    md = (rep / "report.md").read_text()
    for sid in SECTIONS:
        assert f'<a id="{sid}"></a>' in md, sid
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"confusion.png", "reliability.png", "samples.png", "groups_race_gender.png"} <= set(
        images
    )
    for name in images:
        assert Image.open(rep / name).format == "PNG"
    # headline numbers are the evaluation's own
    assert f"| accuracy | {result['accuracy']:.4f} |" in md
    (tn, fp), (fn, tp) = result["confusion"]["matrix"]
    assert f"| male | {tn} | {fp} |" in md and f"| female | {fn} | {tp} |" in md
    # the unreadable file is listed with its reason
    skipped = md.split('<a id="skipped"></a>')[1]
    assert "30_1_0_20170101000000999.jpg.chip.jpg" in skipped
    assert result["skipped"][0]["reason"] in skipped


def test_headline_intervals_bracket_the_values():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.25, 400), 0, 1)
    rows = headline(y, p, n_boot=200)
    assert [r["metric"] for r in rows][:2] == ["accuracy", "precision (female)"]
    for r in rows:
        lo, hi = r["ci95"]
        assert lo <= r["value"] <= hi, r
        assert 0 < hi - lo < 0.3, r


def test_one_class_report_says_curves_are_undefined(tmp_path, eval_dir):
    files = sorted(eval_dir.glob("*_1_*.chip.jpg"))[:10]
    probs = np.linspace(0.1, 0.9, len(files))
    preds = [
        {"path": str(f), "label": 1, "female_probability": q}
        for f, q in zip(files, probs, strict=True)
    ]
    result = {"predictions": preds, "confusion": {"matrix": [[0, 0], [4, 6]]}, "skipped": []}
    paths = write_report(result, tmp_path, n_boot=50)
    md = paths["markdown"].read_text()
    assert "ROC and PR curves are undefined" in md
    assert re.findall(r'<a id="(\w+)"></a>', md) == list(SECTIONS)  # one builder each, in order
    assert not (tmp_path / "roc.png").exists()
    assert "no training record" in md


def test_calibration_bins_match_ece():
    rng = np.random.default_rng(1)
    p = rng.random(2000)
    y = (rng.random(2000) < p).astype(int)
    b = calibration_bins(y, p, bins=10)
    assert b["count"].sum() == 2000
    m = b["count"] > 0
    manual = np.sum(b["count"][m] / 2000 * np.abs(b["rate"][m] - b["mean_p"][m]))
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(manual)
    assert expected_calibration_error(y, p) < 0.05  # calibrated by construction
    assert expected_calibration_error(y, p**3) > 0.1  # miscalibrated


def test_ece_noise_floor_shrinks_with_the_group_and_matches_calibrated_draws():
    rng = np.random.default_rng(3)
    small, large = rng.random(80), rng.random(5000)
    floor_small, floor_large = ece_noise_floor(small), ece_noise_floor(large)
    assert floor_small > 0.08 > 0.02 > floor_large  # 80 faces read ~0.1 even when calibrated
    y = (rng.random(80) < small).astype(int)  # one more calibrated draw lands near the floor
    assert abs(expected_calibration_error(y, small) - floor_small) < 0.06


def test_overconfidence_is_confidence_minus_accuracy():
    p = np.array([0.9, 0.9, 0.2, 0.6])  # confidences 0.9 0.9 0.8 0.6, mean 0.8
    y = np.array([1, 0, 0, 1])  # right, wrong, right, right: accuracy 0.75
    assert overconfidence(y, p) == pytest.approx(0.05)
    rng = np.random.default_rng(4)
    q = rng.random(4000)
    assert abs(overconfidence((rng.random(4000) < q).astype(int), q)) < 0.02
    assert overconfidence((rng.random(4000) < 0.5).astype(int), q) > 0.2  # sure but guessing


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    rng = np.random.default_rng(2)
    x = rng.normal(5, 2, 500)
    lo, hi = bootstrap_interval(lambda a, _b: float(np.mean(a)), x, x, n_boot=2000)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.05)
    assert hi == pytest.approx(x.mean() + half, abs=0.05)


def test_classification_report_rows_follow_the_confusion_matrix(cli_report):
    rep, result = cli_report
    md = (rep / "report.md").read_text()
    section = md.split('<a id="classification"></a>')[1].split('<a id="confusion"></a>')[0]
    (tn, fp), (fn, tp) = result["confusion"]["matrix"]
    for name, hit, predicted, actual in (
        ("male", tn, tn + fn, tn + fp),
        ("female", tp, tp + fp, fn + tp),
    ):
        precision, recall = hit / predicted, hit / actual
        f1 = 2 * precision * recall / (precision + recall)
        assert f"| {name} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {actual} |" in section
    assert f"| accuracy |  |  | {(tn + tp) / (tn + fp + fn + tp):.4f} | {result['n']} |" in section
    assert "| macro avg |" in section and "| weighted avg |" in section
