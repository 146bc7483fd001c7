"""Readers: every source format with good and bad items; bad items reported, never fatal."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
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
    assert got == {(25, 0, "Black"), (3, 1, "Asian")}
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
    assert [(s.label, s.age, s.race) for s in ds.samples] == [(0, 30, "Asian"), (1, None, None)]
    assert sorted(s.reason for s in ds.skipped) == ["file not found", "unknown label 'other'"]


def test_csv_without_columns_and_missing_paths(tmp_path):
    (tmp_path / "bad.csv").write_text("name,sex\na.jpg,male\n")
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


def test_cache_survives_two_writers_at_once(tmp_path, monkeypatch):
    """Two runs side by side build the same cache: the second writer's save lands between the
    first one's save and rename, as it did when both used one temporary name."""
    from facegender.data import cache

    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "30_0_0_20170101000000001.jpg")
    ds, pre = read_data(tmp_path), PreprocessConfig(image_size=8)
    save, pids, nested = np.save, itertools.count(101), []

    def interleaved_save(path, arr, **kw):
        save(path, arr, **kw)
        if not nested:  # the other process writes its whole cache now
            nested.append(path)
            decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)

    monkeypatch.setattr(cache.os, "getpid", lambda: next(pids))
    monkeypatch.setattr(cache.np, "save", interleaved_save)
    arrays, kept = decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)
    assert arrays.shape == (1, 8, 8, 3) and len(kept.samples) == 1
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "c").iterdir()) == [
        "alias",
        "json",
        "npy",
    ]


def test_cache_found_by_content_after_mtimes_change(tmp_path, monkeypatch):
    """A re-mounted or copied data set has new mtimes and the same bytes: its arrays are found
    again without a decode; a file whose bytes changed is decoded again."""
    from facegender.data import cache

    for i in range(3):
        _face(tmp_path / f"{20 + i}_{i % 2}_0_2017010100000000{i}.jpg.chip.jpg", i % 2, seed=i)
    ds, pre = read_data(tmp_path), PreprocessConfig(image_size=16)
    arrays, _ = decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)
    for s in ds.samples:
        os.utime(s.path, ns=(10**18, 10**18))

    def no_decode(args):
        raise AssertionError(f"decoded {args[0]} again")

    monkeypatch.setattr(cache, "_decode_one", no_decode)
    again, kept = decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)
    assert np.array_equal(arrays, again) and len(kept.samples) == 3
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1  # an alias, not a second copy
    _face(Path(ds.samples[0].path), 1, seed=9)
    with pytest.raises(AssertionError, match="decoded"):
        decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)


def _fairface(tmp_path, rows: str):
    (tmp_path / "ff" / "train").mkdir(parents=True)
    for i in range(1, 5):
        _face(tmp_path / "ff" / "train" / f"{i}.webp", i % 2, seed=i)
    (tmp_path / "ff" / "labels.csv").write_text("file,age,gender,race,service_test\n" + rows)
    return tmp_path / "ff"


def test_fairface_layout_and_spreadsheet_ages(tmp_path):
    root = _fairface(
        tmp_path,
        "train/1.webp,03-Sep,Male,East Asian,TRUE\n"
        "train/2.webp,Oct-19,Female,Latino_Hispanic,FALSE\n"
        "train/3.webp,more than 70,Male,Middle Eastern,FALSE\n"
        "train/4.webp,20-29,Other,White,FALSE\n"
        "train/5.webp,20-29,Female,White,FALSE\n"
        "train/1.webp,5-9,Female,White,FALSE\n",
    )
    for spec in (root, root / "labels.csv"):  # the folder, or its CSV given directly
        ds = read_data(spec)
        got = [(s.path.split("/")[-1], s.label, s.age_group, s.race) for s in ds.samples]
        assert got == [
            ("1.webp", 0, "3-9", "East Asian"),
            ("2.webp", 1, "10-19", "Latino_Hispanic"),
            ("3.webp", 0, "more than 70", "Middle Eastern"),
        ]
        assert {s.source for s in ds.samples} == {"ff"}
        reasons = sorted(r.reason.split(" in ")[0] for r in ds.skipped)
        assert reasons == ["file not found", "unknown age bucket '5-9'", "unknown gender 'Other'"]


def test_manifest_round_trip_keeps_groups(tmp_path):
    from facegender.data.manifest import write_manifest

    root = _fairface(tmp_path, "train/1.webp,3-9,Male,Southeast Asian,TRUE\n")
    utk = tmp_path / "utk"
    utk.mkdir()
    _face(utk / "70_1_3_20170116174525125.jpg.chip.jpg", 1)
    ds = read_data([root, utk])
    back = read_data(write_manifest(ds.samples, tmp_path / "m.csv"))
    assert back.samples == ds.samples


def test_group_metrics_use_each_sources_own_groups():
    from facegender.data import Sample
    from facegender.metrics import group_metrics

    samples = [
        Sample("a", 0, "utkface", age=2, race="White"),
        Sample("b", 1, "utkface", age=30, race="Asian"),
        Sample("c", 1, "fairface", race="White", age_group="3-9"),
        Sample("d", 0, "fairface", race="East Asian", age_group="more than 70"),
    ]
    y = np.array([s.label for s in samples])
    p = np.array([0.1, 0.2, 0.9, 0.8])  # b and d wrong
    g = group_metrics(samples, y, p)
    assert list(g["age"]) == ["0-3", "20-39", "3-9", "more than 70"]
    assert g["race"]["White"]["n"] == 2  # pooled by name ...
    ff = g["by_source"]["fairface"]  # ... and per source alone
    assert ff["race"] == {
        "East Asian": {
            "n": 1,
            "correct": 0,
            "accuracy": 0.0,
            "accuracy_ci95": ff["race"]["East Asian"]["accuracy_ci95"],
        },
        "White": {
            "n": 1,
            "correct": 1,
            "accuracy": 1.0,
            "accuracy_ci95": ff["race"]["White"]["accuracy_ci95"],
        },
    }
    assert set(ff["race_gender"]) == {"East Asian male", "White female"}
    assert "source" not in ff and set(g["by_source"]) == {"fairface", "utkface"}


def test_aligned_crops_go_through_predicts_detector(tmp_path):
    """face_crop="aligned" gives predict's crop of the centred face; no face: own crop, counted."""
    from facegender.align import align_face
    from facegender.detect import get_detector
    from facegender.preprocess import face_array, open_image

    photos = Path(__file__).resolve().parents[1] / "examples" / "photos"
    (tmp_path / "female").mkdir()
    x, y, w, h = get_detector().detect(open_image(photos / "astronaut.jpg"))[0].box
    m = max(w, h)  # a data-set-style crop: the face centred with a margin around it
    box = (x + w / 2 - m, y + h / 2 - m, x + w / 2 + m, y + h / 2 + m)
    open_image(photos / "astronaut.jpg").crop(tuple(map(round, box))).save(
        tmp_path / "female/a.png"
    )
    Image.new("RGB", (64, 64), (90, 120, 200)).save(tmp_path / "female" / "plain.png")
    ds = read_data(tmp_path)
    cfg = PreprocessConfig(image_size=32)
    own, _ = decode_dataset(ds, cfg, None, progress=False)
    aligned, kept = decode_dataset(ds, cfg, tmp_path / "c", progress=False, face_crop="aligned")
    assert [s.path for s in kept.samples] == [s.path for s in ds.samples]
    assert kept.no_face == [str(tmp_path / "female" / "plain.png")]
    img = open_image(tmp_path / "female" / "a.png")
    det = max(get_detector().detect(img), key=lambda d: d.box[2] * d.box[3])
    assert np.array_equal(aligned[0], face_array(align_face(img, det), cfg))
    assert not np.array_equal(aligned[0], own[0])
    assert np.array_equal(aligned[1], own[1])  # no face found: the image's own crop
    again, kept2 = decode_dataset(ds, cfg, tmp_path / "c", progress=False, face_crop="aligned")
    assert np.array_equal(again, aligned) and kept2.no_face == kept.no_face  # from the cache


def test_cache_from_before_content_keys_is_adopted(tmp_path, monkeypatch):
    """A cache named by its stats key alone is used, and renamed to its content key."""
    from facegender.data import cache

    _face(tmp_path / "20_0_0_20170101000000001.jpg.chip.jpg", 0)
    ds, pre = read_data(tmp_path), PreprocessConfig(image_size=16)
    arrays, _ = decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)
    stats = cache.decode_key(ds.samples, pre, "own")
    content = (tmp_path / "c" / f"{stats}.alias").read_text()
    for ext in ("npy", "json"):  # the layout before content keys
        os.replace(tmp_path / "c" / f"{content}.{ext}", tmp_path / "c" / f"{stats}.{ext}")
    (tmp_path / "c" / f"{stats}.alias").unlink()
    monkeypatch.setattr(cache, "_decode_one", lambda args: 1 / 0)
    again, _ = decode_dataset(ds, pre, tmp_path / "c", workers=1, progress=False)
    assert np.array_equal(arrays, again)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        [f"{content}.npy", f"{content}.json", f"{stats}.alias"]
    )
