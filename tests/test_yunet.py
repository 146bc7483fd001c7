"""The shipped YuNet graph: the library's weights, the library's faces, its decoding rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender.detect import LibYuNetDetector, YuNetDetector
from facegender.yunet import GRAPH_FILE, STRIDES, decode

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def test_shipped_graph_holds_the_weights_of_the_installed_library():
    """A yuface upgrade with other weights (or a stale file) fails here, not in users' crops."""
    pytest.importorskip("yuface")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from facegender.yunet import build_graph, library_layers

    shipped = {t.name: numpy_helper.to_array(t) for t in onnx.load(GRAPH_FILE).graph.initializer}
    rebuilt = build_graph(library_layers())
    onnx.checker.check_model(rebuilt)
    fresh = {t.name: numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
    assert shipped.keys() == fresh.keys() and len(shipped) == 2 * 53 + 1
    for name, value in fresh.items():
        assert np.array_equal(shipped[name], value), name


def _frames():
    """Every example photo, also rescaled, tilted and mirrored: faces at many sizes and angles."""
    for f in sorted(PHOTOS.glob("*.jpg")):
        img = Image.open(f).convert("RGB")
        img.thumbnail((512, 512))
        yield f.name, img
        yield f"{f.name} x0.6", img.resize((int(img.width * 0.6), int(img.height * 0.6)))
        yield f"{f.name} x1.4", img.resize((int(img.width * 1.4), int(img.height * 1.4)))
        yield f"{f.name} 9 deg", img.rotate(9, Image.Resampling.BILINEAR)
        yield f"{f.name} mirrored", img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        small = img.resize((int(img.width * 0.8), int(img.height * 0.8)))
        yield f"{f.name} -6 deg x0.8", small.rotate(-6, Image.Resampling.BILINEAR)


def test_graph_finds_the_faces_the_library_finds():
    """Same faces, boxes and landmarks to the pixel (float sums in another order may move a
    truncated coordinate by one), same scores to the library's 0.01 steps."""
    pytest.importorskip("yuface")
    graph, lib = YuNetDetector(max_side=10_000), LibYuNetDetector(max_side=10_000)
    faces = exact = 0
    for name, img in _frames():
        ours, ref = graph.detect(img), lib.detect(img)
        assert len(ours) == len(ref), name
        for a, b in zip(ours, ref, strict=True):
            box, marks = np.subtract(a.box, b.box), a.landmarks - b.landmarks
            diff = max(np.abs(box).max(), np.abs(marks).max())
            assert diff <= 1 and 0 <= a.score - b.score < 0.01 + 1e-6, name
            faces, exact = faces + 1, exact + (diff == 0)
    assert faces >= 20 and exact >= 0.9 * faces


def _outputs(logits: dict[tuple[int, int, int], float], boxes: dict) -> dict[str, np.ndarray]:
    """Head outputs for a 32 x 32 frame: every cell scored ``-20`` but those in ``logits``."""
    out = {}
    for s in STRIDES:
        n = 32 // s
        cls = np.full((1, 1, n, n), -20.0, np.float32)
        box = np.zeros((1, 4, n, n), np.float32)
        for (stride, r, c), v in logits.items():
            if stride == s:
                cls[0, 0, r, c] = v
                box[0, :, r, c] = boxes[(stride, r, c)]
        out |= {f"cls_{s}": cls, f"obj_{s}": cls.copy(), f"box_{s}": box}
        out[f"kps_{s}"] = np.zeros((1, 10, n, n), np.float32)
    return out


def test_decode_scores_places_and_suppresses_like_the_library():
    size = np.log(4.0)  # exp(.) x stride 8 = 32 px
    logits = {(8, 1, 1): 5.0, (8, 1, 2): 3.0, (32, 0, 0): 2.0}
    boxes = {(8, 1, 1): [0, 0, size, size], (8, 1, 2): [0, 0, size, size], (32, 0, 0): [1, 1, 0, 0]}
    rows = decode(_outputs(logits, boxes), min_score=0.5)
    sig = 1 / (1 + np.exp(-np.array([5.0, 2.0])))
    # the second stride-8 box overlaps the first with IoU 0.6 and is suppressed
    np.testing.assert_allclose(rows[:, 0], sig, rtol=1e-6)
    np.testing.assert_array_equal(rows[0, 1:5], [-8, -8, 32, 32])  # centre (8, 8), 32 px
    np.testing.assert_array_equal(rows[1, 1:5], [16, 16, 32, 32])  # centre (0 + 32, 0 + 32)
    np.testing.assert_array_equal(rows[0, 5:], [8] * 10)  # zero offsets: the cell's corner
    assert len(decode(_outputs(logits, boxes), min_score=0.99)) == 1


def test_detector_session_runs_the_threads_it_is_given():
    opts = YuNetDetector(threads=1)._graph.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
