"""Face detection and alignment on the example photos (real faces, no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegender.align import TEMPLATE, align_face, similarity_transform, template_to_image
from facegender.detect import Detection, LibYuNetDetector, YuNetDetector, get_detector
from facegender.preprocess import open_image

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


@pytest.fixture(scope="module")
def detector():
    return YuNetDetector()


def test_one_face_with_level_eyes(detector):
    found = detector.detect(open_image(PHOTOS / "astronaut.jpg"))
    assert len(found) == 1
    d = found[0]
    x, y, w, h = d.box
    # Eileen Collins' face is in the upper middle of the 512 x 512 photo.
    assert 150 < x < 220 and 30 < y < 100 and 60 < w < 130 and 0.8 < d.score <= 1.0
    lm = d.landmarks
    assert lm.shape == (5, 2)
    assert lm[0, 0] < lm[1, 0]  # eye on the image's left comes first
    assert abs(lm[0, 1] - lm[1, 1]) < 0.1 * w  # upright face: eyes level
    assert np.all((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h))


def test_two_faces_one_in_each_half(detector):
    img = open_image(PHOTOS / "two_people.jpg")
    found = detector.detect(img)
    assert len(found) == 2
    centres = sorted(d.box[0] + d.box[2] / 2 for d in found)
    assert centres[0] < img.width / 2 < centres[1]


def test_no_human_face_in_cat_photo(detector):
    assert detector.detect(open_image(PHOTOS / "cat.jpg")) == []


def test_a_plain_frame_has_no_face_and_no_error(detector):
    assert detector.detect(Image.new("RGB", (72, 72), (120, 120, 120))) == []


def test_frames_too_thin_for_a_face_are_not_searched(monkeypatch):
    """YuNet spends seconds on a frame 1 px high; such frames (also after downscaling a long
    strip) go nowhere near the network."""
    from facegender.detect import MIN_SIDE

    d = YuNetDetector()
    monkeypatch.setattr(d, "_rows", lambda rgb: pytest.fail(f"searched a {rgb.shape} frame"))
    for size in [(1, 1), (300, 1), (MIN_SIDE - 1, 400), (5000, 60)]:
        assert d.detect(Image.new("RGB", size, (120, 120, 120))) == []


def test_exif_rotated_photo_is_upright_before_detection(detector):
    upright = detector.detect(open_image(PHOTOS / "astronaut.jpg"))[0]
    rotated = detector.detect(open_image(PHOTOS / "astronaut_exif_rotated.jpg"))
    assert len(rotated) == 1
    # The rotated copy is the same photo at 384 px: same box at 0.75 scale once EXIF is applied.
    np.testing.assert_allclose(np.array(rotated[0].box), np.array(upright.box) * 0.75, atol=8)


def test_array_pil_and_strided_inputs_agree(detector):
    img = open_image(PHOTOS / "two_people.jpg")
    rgb = np.asarray(img)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    a = [d.box for d in detector.detect(img)]
    b = [d.box for d in detector.detect(rgb)]
    c = [d.box for d in detector.detect(rgba[:, :, :3])]  # a non-contiguous view
    assert a == b == c


def test_large_frames_are_downscaled_and_mapped_back():
    det = YuNetDetector(max_side=512)
    img = open_image(PHOTOS / "astronaut.jpg")
    small = det.detect(img)[0]
    big = det.detect(img.resize((1536, 1536), Image.Resampling.BILINEAR))[0]
    np.testing.assert_allclose(np.array(big.box), np.array(small.box) * 3, atol=6)
    np.testing.assert_allclose(big.landmarks, small.landmarks * 3, atol=6)


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="unknown detector"):
        get_detector("nope")


def test_similarity_transform_recovers_a_known_one():
    theta, s, t = np.radians(17), 2.5, np.array([40.0, -7.0])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    dst = TEMPLATE @ (s * rot).T + t
    m = similarity_transform(TEMPLATE, dst)
    np.testing.assert_allclose(m[:, :2], s * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def _landmarks_in_crop(detector, photo: Image.Image) -> np.ndarray:
    """Detected landmarks expressed in the aligned crop's frame (0..1 of its side)."""
    found = detector.detect(photo)
    assert len(found) == 1
    m = template_to_image(found[0])
    return (found[0].landmarks - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


@pytest.mark.parametrize("angle", [0, 10, -12])
def test_alignment_maps_landmarks_onto_the_template(detector, angle):
    photo = open_image(PHOTOS / "astronaut.jpg").rotate(angle, Image.Resampling.BILINEAR)
    lm = _landmarks_in_crop(detector, photo)
    # Eyes level and near UTKFace's median layout (her broad smile puts the mouth corners wider
    # than the median, so the whole set fits less tightly than the eyes).
    assert abs(lm[0, 1] - lm[1, 1]) < 0.02
    assert np.abs(lm[:2] - TEMPLATE[:2]).max() < 0.06
    assert np.abs(lm - TEMPLATE).max() < 0.12


def test_aligned_crop_is_redetected_like_a_training_image(detector):
    photo = open_image(PHOTOS / "astronaut.jpg")
    crop = align_face(photo, detector.detect(photo)[0])
    assert crop.width == crop.height
    again = detector.detect(crop.resize((200, 200), Image.Resampling.BILINEAR))
    assert len(again) == 1
    assert np.abs(again[0].landmarks[:2] / 200.0 - TEMPLATE[:2]).max() < 0.08


def test_box_only_detection_uses_the_template_box():
    det = Detection(box=(100.0, 50.0, 84.0, 97.0), score=0.9, landmarks=None)
    m = template_to_image(det)
    # The template's box maps onto the detection's box.
    np.testing.assert_allclose(m @ np.array([0.075, 0.005, 1.0]), [100.0, 50.0], atol=1e-6)
    np.testing.assert_allclose(m[0, 0], 100.0, atol=1e-6)
    crop = align_face(Image.new("RGB", (400, 300)), det)
    assert crop.size == (100, 100)


def test_yunet_through_ctypes_matches_yuface_and_does_not_leak():
    """Our call into libfacedetection gives yuface's rows, and memory stays flat over many calls
    (yuface.c_detect leaks its 36 KB result buffer on every call)."""
    from yuface import c_detect

    det = LibYuNetDetector()
    photos = sorted(PHOTOS.glob("*.jpg"))
    assert photos
    for f in photos:
        img = Image.open(f).convert("RGB")
        img.thumbnail((512, 512))
        bgr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
        ours, ref = det._raw(bgr), c_detect(bgr)
        assert ours.shape == ref.shape and np.array_equal(ours[:, :15], ref[:, :15]), f.name

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith("VmRSS"))

    img = np.asarray(Image.open(photos[0]).convert("RGB").resize((320, 240)))
    for _ in range(20):
        det.detect(img)
    before = rss_mb()
    for _ in range(400):  # 14 MB with a 36 KB leak per call
        det.detect(img)
    assert rss_mb() - before < 5
