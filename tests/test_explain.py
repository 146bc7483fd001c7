"""Saliency maps: they mean something (deletion test), sit where the face is, run torch-free,
and come out of the CLI, Python and the web service.

Deletion test: hiding the 15 % of pixels a map ranks most salient must move the logit away from
the answer more than hiding the 15 % it ranks least salient. On the bundled model this holds on
every real face of examples/photos, and on most generated faces (cartoons, far from its data).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegender.cli import cli
from facegender.explain import deletion_scores, saliency
from facegender.predict import Predictor
from facegender.preprocess import face_array
from facegender.synthetic import synthetic_face

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
REAL = ("astronaut.jpg", "two_people.jpg", "astronaut_exif_rotated.jpg")


def _generated(pre, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [face_array(synthetic_face(i % 2, rng), pre) for i in range(n)]


@pytest.fixture(scope="module")
def bundled():
    return Predictor(threads=2)  # ONNX backend: the bundled folder has model.onnx


def test_saliency_shape_and_values(tiny_checkpoint):
    p = Predictor(tiny_checkpoint, detect=False, threads=1)
    a = _generated(p.classifier.preprocess, 1, 0)[0]
    s = saliency(p.classifier, a)
    assert s.heat.shape == a.shape[:2] and s.grid.shape == (13, 13)
    v = json.loads(json.dumps(s.values()))
    assert len(v["grid"]) == 13 and v["image_size"] == a.shape[0]
    assert s.logit == pytest.approx(float(p.classifier.logits(a[None])[0]), abs=1e-5)


def test_deletion_on_generated_faces_with_tiny_model(tiny_checkpoint):
    p = Predictor(tiny_checkpoint, detect=False, threads=1)
    scores = np.array(
        [deletion_scores(p.classifier, a, saliency(p.classifier, a))
         for a in _generated(p.classifier.preprocess, 12, 1)]
    )  # fmt: skip
    assert (scores[:, 0] > scores[:, 1]).mean() >= 0.75, scores.round(3).tolist()
    assert scores[:, 0].mean() > 2 * scores[:, 1].mean()


def test_deletion_on_bundled_model_real_faces(bundled):
    n = 0
    for name in REAL:
        e = bundled.explain(PHOTOS / name)
        arrays = bundled.cropper(PHOTOS / name).arrays
        assert e.faces and len(e.faces) == len(arrays)
        for f, a in zip(e.faces, arrays, strict=True):
            top, least = deletion_scores(bundled.classifier, a, f.saliency)
            assert top > least, (name, f.index, top, least)
            n += 1
    assert n == 4


def test_deletion_on_bundled_model_generated_faces(bundled):
    clf = bundled.classifier
    scores = np.array(
        [deletion_scores(clf, a, saliency(clf, a)) for a in _generated(clf.preprocess, 10, 3)]
    )
    assert (scores[:, 0] > scores[:, 1]).mean() >= 0.7, scores.round(3).tolist()
    assert scores[:, 0].mean() > scores[:, 1].mean()


def test_crop_geometry_maps_model_pixels_onto_the_photo(bundled):
    """Sampling the photo through model_to_photo reproduces the crop the classifier saw."""
    img = Image.open(PHOTOS / "two_people.jpg").convert("RGB")
    crops = bundled.cropper(img)
    size = bundled.classifier.preprocess.image_size
    for a, m in zip(crops.arrays, crops.transforms, strict=True):
        coeffs = tuple(np.asarray(m, np.float64).ravel())
        resampled = np.asarray(
            img.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        )
        diff = np.abs(resampled.astype(int) - a.astype(int)).mean()
        assert diff < 12, diff  # resampling differs (box filter, bilinear); the place does not


def test_onnx_and_torch_give_the_same_map(tiny_checkpoint, tmp_path):
    from facegender.classifier import load_classifier
    from facegender.export import export_onnx

    onnx_file = export_onnx(tiny_checkpoint, tmp_path / "tiny.onnx")
    torch_clf = load_classifier(tiny_checkpoint, backend="torch")
    onnx_clf = load_classifier(onnx_file, backend="onnx")
    a = _generated(torch_clf.preprocess, 1, 5)[0]
    np.testing.assert_allclose(saliency(onnx_clf, a).grid, saliency(torch_clf, a).grid, atol=1e-3)


def test_explain_runs_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from facegender.predict import Predictor\n"
        f"e = Predictor(threads=1).explain({str(PHOTOS / 'astronaut.jpg')!r})\n"
        "assert e.faces and e.overlay(0).size == e.image.size\n"
        "print(e.result.faces[0].gender)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_overlay_paints_only_around_the_face(bundled):
    e = bundled.explain(PHOTOS / "two_people.jpg")
    base = np.asarray(e.image, dtype=int)
    for f in e.faces:
        changed = np.abs(np.asarray(f.overlay(e.image), dtype=int) - base).sum(-1) > 0
        ys, xs = np.nonzero(changed)
        x, y, w, h = f.face.box
        assert changed.any()
        cx, cy = xs.mean(), ys.mean()
        assert x - w / 2 < cx < x + 1.5 * w and y - h / 2 < cy < y + 1.5 * h


def test_cli_explain_writes_png_and_values(tmp_path):
    out = tmp_path / "why"
    r = CliRunner().invoke(
        cli,
        ["predict", str(PHOTOS / "two_people.jpg"), "--explain", str(out), "--explain-values",
         "--format", "json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    pngs, jsons = sorted(out.glob("*.png")), sorted(out.glob("*.json"))
    assert [p.name for p in pngs] == ["two_people.jpg.face0.png", "two_people.jpg.face1.png"]
    assert Image.open(pngs[0]).size == Image.open(PHOTOS / "two_people.jpg").size
    v = json.loads(jsons[0].read_text())
    assert v["face"] == 0 and len(v["saliency"]["grid"]) == 13 and "box" in v
    bad = CliRunner().invoke(cli, ["predict", str(PHOTOS / "cat.jpg"), "--explain-values"])
    assert bad.exit_code != 0 and "--explain" in bad.output


def test_api_explain(bundled):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from facegender.serve import create_app

    data = (PHOTOS / "two_people.jpg").read_bytes()
    with TestClient(create_app(predictor=bundled)) as c:
        both = c.post("/v1/explain", files={"file": ("a.jpg", data, "image/jpeg")})
        one = c.post(
            "/v1/explain?face=1&values=false",
            content=data,
            headers={"Content-Type": "image/jpeg"},
        )
        missing = c.post("/v1/explain?face=7", content=data, headers={"Content-Type": "image/jpeg"})
        page = c.get("/static/app.js").text
    assert both.status_code == 200 and [f["face"] for f in both.json()["faces"]] == [0, 1]
    f = one.json()["faces"]
    assert len(f) == 1 and f[0]["face"] == 1 and "saliency" not in f[0]
    png = Image.open(io.BytesIO(base64.b64decode(f[0]["overlay_png"])))
    assert max(png.size) <= 640
    assert len(both.json()["faces"][0]["saliency"]["grid"]) == 13
    assert missing.status_code == 400 and "face" in missing.json()["error"]
    assert "/v1/explain" in page


def test_report_shows_heatmaps_of_confident_mistakes_and_risk_coverage(tiny_checkpoint, tmp_path):
    from facegender.evaluate import evaluate
    from facegender.report import write_report
    from facegender.synthetic import write_utkface_folder

    data = write_utkface_folder(tmp_path / "d", n=24, seed=9)
    result = evaluate([str(data)], model=tiny_checkpoint, cache=False)
    for d in result["predictions"][:10]:  # make sure of confident mistakes to show
        d["label"] = int(d["female_probability"] < 0.5)
    paths = write_report(result, tmp_path / "rep", model_dir=tiny_checkpoint, n_boot=50)
    rep = tmp_path / "rep"
    grid = Image.open(rep / "mistakes_heatmaps.png")
    assert grid.size[0] > 300
    assert (rep / "risk_coverage_age.png").is_file()
    md = paths["markdown"].read_text()
    assert "mistakes_heatmaps.png" in md and "answered at 98 % accuracy" in md
