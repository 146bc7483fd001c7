"""Readers: every source format with good and bad items; bad items reported, never fatal."""

from __future__ import annotations

import numpy as np
from PIL import Image

from facegender.data import read_data
from facegender.data.cache import decode_dataset
from facegender.preprocess import PreprocessConfig
from facegender.synthetic import synthetic_face


def _face(path, label=0, seed=0):
    synthetic_face(label, np.random.default_rng(seed), 48).save(path)


def test_utkface_names_good_and_bad(tmp_path):
    _face(tmp_path / "25_0_1_20170116174525125.jpg.chip.jpg", 0)
    _face(tmp_path / "3_1_2_20170116174525126.jpg", 1, seed=1)
    _face(tmp_path / "39_1_20170116174525125.jpg.chip.jpg")  # race missing
    _face(tmp_path / "30_2_0_20170116174525127.jpg.chip.jpg")  # gender 2
    _face(tmp_path / "holiday.jpg")  # no label at all
    ds = read_data(tmp_path)
    got = {(s.age, s.label, s.race) for s in ds.samples}
    assert got == {(25, 0, 1), (3, 1, 2)}
    reasons = {p.split("/")[-1]: r for p, r in ((s.path, s.reason) for s in ds.skipped)}
    assert "malformed" in reasons["39_1_20170116174525125.jpg.chip.jpg"]
    assert "unknown label" in reasons["30_2_0_20170116174525127.jpg.chip.jpg"]
    assert "no label" in reasons["holiday.jpg"]
    assert {s.source for s in ds.samples} == {tmp_path.name}


def test_class_folders_any_case_any_depth(tmp_path):
    for i, d in enumerate(["Training/Male", "Training/FEMALE", "Validation/man", "x/women", "men"]):
        (tmp_path / d).mkdir(parents=True)
        _face(tmp_path / d / f"{i}.png", seed=i)
    (tmp_path / "men" / "notes.txt").write_text("not an image")
    ds = read_data(tmp_path)
    labels = {s.path.split(str(tmp_path) + "/")[1]: s.label for s in ds.samples}
    assert labels == {
        "Training/Male/0.png": 0,
        "Training/FEMALE/1.png": 1,
        "Validation/man/2.png": 0,
        "x/women/3.png": 1,
        "men/4.png": 0,
    }
    assert [s.reason for s in ds.skipped] == ["not an image file name"]


def test_conflicting_folder_and_name_labels_are_skipped(tmp_path):
    (tmp_path / "male").mkdir()
    _face(tmp_path / "male" / "25_1_0_20170116174525125.jpg.chip.jpg")
    ds = read_data(tmp_path)
    assert not ds.samples and "conflicting" in ds.skipped[0].reason


def test_csv_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    _face(tmp_path / "img" / "a.jpg", 0)
    _face(tmp_path / "img" / "b.jpg", 1, seed=1)
    (tmp_path / "list.csv").write_text(
        "path,label,age,race\nimg/a.jpg,male,30,Asian\nimg/b.jpg,Female,,\n"
        "img/missing.jpg,male,,\nimg/a.jpg,other,,\n"
    )
    ds = read_data(tmp_path / "list.csv")
    assert [(s.label, s.age, s.race) for s in ds.samples] == [(0, 30, 2), (1, None, None)]
    assert sorted(s.reason for s in ds.skipped) == ["file not found", "unknown label 'other'"]


def test_csv_without_columns_and_missing_paths(tmp_path):
    (tmp_path / "bad.csv").write_text("file,gender\na.jpg,male\n")
    ds = read_data([tmp_path / "bad.csv", tmp_path / "nowhere"])
    assert not ds.samples
    assert [s.reason for s in ds.skipped] == [
        "manifest lacks 'path' and 'label' columns",
        "data path not found",
    ]


def test_decode_reports_truncated_not_image_and_duplicates(tmp_path):
    _face(tmp_path / "20_0_0_20170101000000001.jpg.chip.jpg", 0)
    raw = (tmp_path / "20_0_0_20170101000000001.jpg.chip.jpg").read_bytes()
    (tmp_path / "21_0_0_20170101000000002.jpg.chip.jpg").write_bytes(raw)  # duplicate
    (tmp_path / "22_1_0_20170101000000003.jpg.chip.jpg").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "23_1_0_20170101000000004.jpg.chip.jpg").write_bytes(b"hello, not a jpeg")
    (tmp_path / "24_1_0_20170101000000005.jpg.chip.jpg").write_bytes(b"")
    ds = read_data(tmp_path)
    assert len(ds.samples) == 5
    arrays, kept = decode_dataset(
        ds, PreprocessConfig(image_size=16), cache_dir=tmp_path / "c", progress=False
    )
    assert arrays.shape == (1, 16, 16, 3) and len(kept.samples) == 1
    reasons = sorted(s.reason.split(" of ")[0] for s in kept.skipped)
    assert reasons == ["duplicate content", "empty file", "not an image", "truncated image"]
    # the cache returns the same arrays and the same skipped list
    arrays2, kept2 = decode_dataset(
        ds, PreprocessConfig(image_size=16), cache_dir=tmp_path / "c", progress=False
    )
    assert np.array_equal(arrays, arrays2) and kept2.skipped == kept.skipped


def test_cache_key_changes_with_image_size(tmp_path):
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "30_0_0_20170101000000001.jpg")
    ds = read_data(tmp_path)
    a, _ = decode_dataset(ds, PreprocessConfig(image_size=8), tmp_path / "c", progress=False)
    b, _ = decode_dataset(ds, PreprocessConfig(image_size=12), tmp_path / "c", progress=False)
    assert a.shape[1] == 8 and b.shape[1] == 12
