"""train --face-crop: the crops predict makes (detector + align) as a training view."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facegender.train import batch_arrays, draw_views, face_crop_views


def test_views_of_each_setting():
    assert face_crop_views("own") == ["own"]
    assert face_crop_views("aligned") == ["aligned"]
    assert face_crop_views("both") == ["own", "aligned"]
    with pytest.raises(ValueError, match="unknown face_crop"):
        face_crop_views("tight")


def test_batch_draws_each_image_from_one_view():
    own, aligned = np.zeros((50, 2, 2, 1), np.uint8), np.ones((50, 2, 2, 1), np.uint8)
    idx = np.arange(0, 50, 2)
    one = batch_arrays([own], idx, draw_views(1, len(idx), np.random.default_rng(0)))
    assert (one == 0).all()
    pick = draw_views(2, len(idx), np.random.default_rng(0))
    assert np.array_equal(pick, draw_views(2, len(idx), np.random.default_rng(0)))  # seeded
    a = batch_arrays([own, aligned], idx, pick)
    per_image = a.reshape(len(idx), -1)
    assert np.array_equal(per_image.min(1), pick)  # each image from the view drawn for it
    assert set(pick) == {0, 1} and (per_image.min(1) == per_image.max(1)).all()
    assert (own == 0).all()  # the stored view is never written to


def test_train_on_both_views_reports_each(synthetic_dirs, tmp_path):
    from facegender.train import TrainConfig, train

    cfg = TrainConfig(
        data=[str(synthetic_dirs["utk"])],
        out=str(tmp_path / "run"),
        model="fgnet_s",
        image_size=32,
        epochs=1,
        batch_size=32,
        threads=2,
        face_crop="both",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    log: list[str] = []
    train(cfg, log=log.append)
    metrics = json.loads((tmp_path / "run" / "config.json").read_text())["metrics"]
    assert set(metrics) == {"validation", "validation_aligned"}
    assert metrics["validation_aligned"]["accuracy"] != metrics["validation"]["accuracy"] or (
        metrics["validation_aligned"]["log_loss"] != metrics["validation"]["log_loss"]
    )  # scored on other crops
    assert metrics["validation_aligned"]["n"] == metrics["validation"]["n"]
    # the detector takes some generated drawings for faces, not all: the rest are counted
    from facegender.data import read_data
    from facegender.data.cache import decode_dataset

    _, kept = decode_dataset(
        read_data(cfg.data), cfg.preprocess(), tmp_path / "cache", face_crop="aligned"
    )
    assert 0 < len(kept.no_face) < 160
    assert f"aligned crops: no face found in {len(kept.no_face)} images" in "\n".join(log)
