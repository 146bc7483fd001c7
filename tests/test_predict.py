"""The predictor, its Python API and ``facegender predict``/``demo`` on the example photos.

The classifier is the tiny checkpoint trained on generated faces: these tests check the plumbing
(detection, input types, colour order, errors, formats, resume), not the model's accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegender.cli import cli
from facegender.predict import Face, FaceCropper, ImageResult, Predictor
from facegender.predict_io import CSV_FIELDS, done_paths, results_to_csv
from facegender.preprocess import PreprocessConfig

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"
FACE_KEYS = {"box", "score", "gender", "female_probability"}
RESULT_KEYS = {"path", "status", "error", "error_code", "width", "height", "faces"}


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(tiny_checkpoint, threads=1)


def _summary(r: ImageResult):
    return (
        r.status,
        r.width,
        r.height,
        [(f.box, f.gender, round(f.female_probability, 4)) for f in r.faces],
    )


def test_faces_found_and_classified(predictor):
    r = predictor.predict(PHOTOS / "two_people.jpg")
    assert r.status == "ok" and r.error is None and (r.width, r.height) == (768, 384)
    assert len(r.faces) == 2
    for f in r.faces:
        assert f.gender in ("male", "female") and 0.0 <= f.female_probability <= 1.0
        assert f.gender == ("female" if f.female_probability >= 0.5 else "male")
        x, y, w, h = f.box
        assert all(isinstance(v, int) for v in f.box) and w > 20 and h > 20
        assert x + w <= r.width and y + h <= r.height
    assert predictor.predict(PHOTOS / "cat.jpg").status == "no_face"


def test_every_input_type_gives_the_same_result(predictor):
    path = PHOTOS / "astronaut.jpg"
    img = Image.open(path)
    rgb = np.asarray(img.convert("RGB"))
    results = [
        predictor.predict(path),
        predictor.predict(str(path)),
        predictor.predict(path.read_bytes()),
        predictor.predict(img),
        predictor.predict(rgb),
        predictor.predict(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True),
    ]
    assert results[0].path == str(path) and results[2].path is None
    first = _summary(results[0])
    assert first[0] == "ok" and len(first[3]) == 1
    for r in results[1:]:
        assert _summary(r) == first


def test_bgr_flag_matters(predictor):
    rgb = np.asarray(Image.open(PHOTOS / "astronaut.jpg").convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    right = predictor.predict(bgr, bgr=True).faces[0].female_probability
    wrong = predictor.predict(bgr).faces  # BGR read as RGB: a blue face
    assert right == predictor.predict(rgb).faces[0].female_probability
    assert not wrong or wrong[0].female_probability != right


def test_bad_images_are_error_rows_and_the_batch_goes_on(predictor, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((PHOTOS / "astronaut.jpg").read_bytes()[:3000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    inputs = [
        PHOTOS / "astronaut.jpg",
        b"this is not an image",
        tmp_path / "missing.jpg",
        truncated,
        empty,
        np.zeros((3, 3, 7), np.uint8),
        PHOTOS / "cat.jpg",
    ]
    results = predictor.predict_batch(inputs)
    assert [r.status for r in results] == ["ok"] + ["error"] * 5 + ["no_face"]
    errors = [r.error for r in results[1:6]]
    assert errors[0] == "not an image" and errors[1] == "file not found"
    assert "truncated" in errors[2] and errors[3] == "empty file" and "shape" in errors[4]
    assert results[2].path == str(tmp_path / "missing.jpg")
    codes = [r.error_code for r in results]
    assert codes == [None, "not_image", "not_found", "truncated", "empty", "not_image", None]


def test_no_detect_uses_the_whole_image(tiny_checkpoint):
    p = Predictor(tiny_checkpoint, detect=False)
    r = p.predict(PHOTOS / "cat.jpg")
    assert r.status == "ok" and len(r.faces) == 1
    assert r.faces[0].box == [0, 0, 451, 300] and r.faces[0].score == 1.0
    # Same number as evaluation's path for a face crop: load_face -> probabilities.
    from facegender.preprocess import load_face

    arr = load_face(PHOTOS / "cat.jpg", p.classifier.preprocess)
    expected = float(p.classifier.probabilities(arr[None])[0])
    assert r.faces[0].female_probability == pytest.approx(expected, abs=1e-6)


def test_min_face_drops_small_faces(tiny_checkpoint):
    r = Predictor(tiny_checkpoint, min_face=60).predict(PHOTOS / "two_people.jpg")
    assert len(r.faces) == 1 and r.faces[0].box[0] < 384  # the camera man's face is ~45 px


def test_to_dict_schema(predictor):
    d = predictor.predict(PHOTOS / "two_people.jpg").to_dict()
    assert set(d) == RESULT_KEYS and len(d["faces"]) == 2
    assert all(set(f) == FACE_KEYS for f in d["faces"])
    assert json.loads(json.dumps(d)) == d
    e = predictor.predict(b"junk").to_dict()
    assert e == {"path": None, "status": "error", "error": "not an image",
                 "error_code": "not_image", "width": None, "height": None, "faces": []}  # fmt: skip


def test_csv_has_one_row_per_face_and_one_per_faceless_image():
    results = [
        ImageResult("a.jpg", "ok", None, 10, 10, [Face([0, 0, 5, 5], 0.9, "male", 0.1)] * 3),
        ImageResult("b.jpg", "no_face", None, 10, 10),
        ImageResult("c.jpg", "error", "not an image", error_code="not_image"),
    ]
    rows = list(csv.DictReader(io.StringIO(results_to_csv(results))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r["path"] for r in rows] == ["a.jpg"] * 3 + ["b.jpg", "c.jpg"]
    assert [r["face"] for r in rows[:3]] == ["0", "1", "2"]
    assert rows[4]["error"] == "not an image" and rows[4]["gender"] == ""
    assert [r["error_code"] for r in rows] == [""] * 4 + ["not_image"]


def test_box_label_reads_the_labels_own_probability():
    from facegender.annotate import label_text

    assert label_text(Face([0, 0, 5, 5], 0.9, "male", 0.1)) == "male 90%"
    assert label_text(Face([0, 0, 5, 5], 0.9, "female", 0.734)) == "female 73%"


class _KillingCropper(FaceCropper):
    """Kills its own worker process on any image named ``poison*`` (a decoder segfault)."""

    def __call__(self, image, bgr=False, path=None):
        if Path(str(image)).name.startswith("poison"):
            os._exit(3)
        return super().__call__(image, bgr=bgr, path=path)


def test_a_crashed_worker_blames_only_its_image(tmp_path):
    """Only the image that kills a process becomes an error row; every other image in flight
    when the pool broke keeps its own result, in input order."""
    from facegender.predict import _parallel_crops

    names = [f"img{i:02d}.jpg" for i in range(12)]
    names[5], names[9] = "poison_a.jpg", "poison_b.jpg"  # two crashes, neither at the front
    for n in names:
        Image.new("RGB", (40, 30), (10 * len(n), 80, 120)).save(tmp_path / n)
    items = iter([(str(tmp_path / n), False, None) for n in names])
    got = list(_parallel_crops(_KillingCropper(PreprocessConfig(), detect=False), items, 2))
    assert [Path(c.path).name for c in got] == names
    bad = {Path(c.path).name: c.error_code for c in got if c.status == "error"}
    assert bad == {"poison_a.jpg": "worker_crashed", "poison_b.jpg": "worker_crashed"}
    assert all(c.status == "ok" and c.arrays.shape == (1, 64, 64, 3) for c in got if c.path
               and "poison" not in c.path)  # fmt: skip


def test_predict_iter_is_lazy(predictor):
    consumed = 0

    def source():
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield PHOTOS / "cat.jpg"

    predictor.batch_size = 4
    try:
        first = next(predictor.predict_iter(source()))
    finally:
        predictor.batch_size = 64
    # one batch classified, at most two more being cut meanwhile: bounded, not the source's 1,000
    assert first.status == "no_face" and consumed <= 3 * 4


def test_worker_processes_give_the_same_results(predictor):
    paths = sorted(PHOTOS.glob("*.jpg")) * 3 + [PHOTOS / "README.md"]
    local = [r.to_dict() for r in predictor.predict_batch(paths)]
    pooled = [r.to_dict() for r in predictor.predict_batch(paths, workers=2)]
    assert pooled == local and local[-1]["status"] == "error"


# -- CLI ------------------------------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_json_and_exit_code_with_a_bad_file(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    res = _run("predict", PHOTOS, bad, "--model", tiny_checkpoint, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [Path(d["path"]).name for d in data] == [
        "astronaut.jpg", "astronaut_exif_rotated.jpg", "cat.jpg", "two_people.jpg", "bad.jpg",
    ]  # fmt: skip
    assert [len(d["faces"]) for d in data] == [1, 1, 0, 2, 0]
    assert all(set(d) == RESULT_KEYS for d in data) and data[-1]["status"] == "error"


def test_cli_csv_no_detect_and_annotate(tiny_checkpoint, tmp_path):
    out, ann = tmp_path / "r.csv", tmp_path / "ann"
    res = _run("predict", PHOTOS, "--model", tiny_checkpoint, "--format", "csv", "--out", out,
               "--annotate", ann)  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and {r["status"] for r in rows} == {"ok", "no_face"}
    assert sorted(p.name for p in ann.iterdir()) == sorted(p.name for p in PHOTOS.glob("*.jpg"))
    before = np.asarray(Image.open(PHOTOS / "astronaut.jpg"), dtype=int)
    after = np.asarray(Image.open(ann / "astronaut.jpg"), dtype=int)
    assert np.abs(after - before).max() > 100  # a box was drawn

    res = _run("predict", PHOTOS, "--model", tiny_checkpoint, "--format", "jsonl", "--no-detect")
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 4 and all(len(d["faces"]) == 1 for d in lines)
    assert all(d["faces"][0]["box"] == [0, 0, d["width"], d["height"]] for d in lines)


def test_cli_resume_skips_done_images(tiny_checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.jpg", "cat.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    out = tmp_path / "r.jsonl"
    assert _run("predict", folder, "--model", tiny_checkpoint, "--format", "jsonl", "--out",
                out).exit_code == 0  # fmt: skip
    # An interrupted run leaves a half-written line; a new photo arrives.
    with out.open("a") as f:
        f.write('{"path": "half-writ')
    shutil.copy(PHOTOS / "two_people.jpg", folder / "two_people.jpg")
    res = _run("predict", folder, "--model", tiny_checkpoint, "--format", "jsonl", "--out", out,
               "--resume")  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    names = [Path(d["path"]).name for d in lines]
    assert names == ["astronaut.jpg", "cat.jpg", "two_people.jpg"]
    assert done_paths(out, "jsonl") == {d["path"] for d in lines}


def test_cli_resume_csv_keeps_one_header(tiny_checkpoint, tmp_path):
    out = tmp_path / "r.csv"
    args = ("predict", PHOTOS / "cat.jpg", "--model", tiny_checkpoint, "--format", "csv")
    assert _run(*args, "--out", out).exit_code == 0
    assert _run(*args, PHOTOS / "astronaut.jpg", "--out", out, "--resume").exit_code == 0
    text = out.read_text()
    assert text.count("path,status") == 1
    assert [r["path"] for r in csv.DictReader(io.StringIO(text))] == [
        str(PHOTOS / "cat.jpg"), str(PHOTOS / "astronaut.jpg"),
    ]  # fmt: skip


def test_cli_fails_only_when_it_cannot_run(tiny_checkpoint, tmp_path):
    assert _run("predict", PHOTOS, "--model", tmp_path).exit_code == 2  # not a checkpoint
    assert _run("predict", tmp_path, "--model", tiny_checkpoint).exit_code == 2  # no images
    res = _run("predict", PHOTOS, "--model", tiny_checkpoint, "--resume")
    assert res.exit_code == 2 and "--resume" in res.output
    # A missing file is an image that could not be read, not a failure of the command.
    assert _run("predict", tmp_path / "nope.jpg", "--model", tiny_checkpoint).exit_code == 0


def test_demo(tiny_checkpoint, tmp_path):
    res = _run("demo", "--model", tiny_checkpoint, "--out", tmp_path / "demo")
    assert res.exit_code == 0, res.output
    assert "two_people.jpg" in res.stdout and (tmp_path / "demo" / "two_people.jpg").is_file()


@pytest.mark.slow
def test_wheel_ships_the_demo_photos_and_the_model(tmp_path):
    """``facegender demo`` from an installed wheel needs its photos inside the package."""
    import subprocess
    import sys
    import zipfile

    from facegender.cli import example_photos_dir

    root = Path(__file__).resolve().parents[1]
    assert example_photos_dir().parent == root / "src" / "facegender"
    tree = tmp_path / "tree"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(root / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(tree), "-w", str(tmp_path)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("facegender-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    photos = {f"facegender/photos/{p.name}" for p in PHOTOS.glob("*.jpg")}
    assert len(photos) == 4 and photos <= names
    assert "facegender/weights/default/config.json" in names


def test_demo_without_bundled_model_says_so(monkeypatch, tmp_path):
    import facegender.model_ref

    monkeypatch.setattr(facegender.model_ref, "bundled_model_dir", lambda: tmp_path / "none")
    res = _run("demo")
    assert res.exit_code != 0 and "bundled model" in res.output


def test_threaded_cropping_keeps_the_input_order_and_bounds_the_read_ahead():
    import random
    import time

    from facegender.predict import _threaded_crops

    started = []

    def cropper(i, bgr, path):
        started.append(i)
        time.sleep(random.Random(i).random() * 0.005)  # finish out of order
        return i

    items = iter([(i, False, None) for i in range(60)])
    out = _threaded_crops(cropper, items, threads=4, ahead=8)
    assert next(out) == 0 and len(started) <= 8
    assert list(out) == list(range(1, 60))
