"""The one preprocessing path: colour order, orientation, odd formats, label mapping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facegender.labels import LABELS, age_band, parse_label
from facegender.preprocess import (
    ImageDecodeError,
    PreprocessConfig,
    face_array,
    load_face,
    open_image,
    probability,
    to_batch,
)


def golden() -> Image.Image:
    """Left half pure red, right half pure blue: a BGR mix-up or a mirror flips it."""
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30, 0] = 255
    a[:, 30:, 2] = 255
    return Image.fromarray(a)


def test_golden_image_colour_order_and_crop():
    x = face_array(golden(), PreprocessConfig(image_size=8))
    assert x.shape == (8, 8, 3) and x.dtype == np.uint8
    assert tuple(x[4, 0]) == (255, 0, 0)  # left is red: RGB order kept
    assert tuple(x[4, 7]) == (0, 0, 255)
    b = to_batch(x)
    assert b.shape == (1, 3, 8, 8) and b.dtype == np.float32
    assert b[0, 0, 4, 0] == pytest.approx(1.0) and b[0, 2, 4, 0] == 0.0


def test_bgr_arrays_are_reordered():
    rgb = np.asarray(golden())
    assert np.array_equal(np.asarray(open_image(rgb[:, :, ::-1].copy(), bgr=True)), rgb)
    assert np.array_equal(np.asarray(open_image(rgb)), rgb)


def test_exif_orientation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    golden().save(buf, "JPEG", exif=exif, quality=95)
    img = open_image(buf.getvalue())
    assert img.size == (40, 60)  # width and height swapped
    top = np.asarray(img)[2, 20]
    assert top[0] > 200 and top[2] < 60  # red (the left half) is now on top


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGBA", "P", "I;16"])
def test_odd_modes_become_rgb(mode):
    img = golden().convert("RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = open_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (60, 40)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert tuple(np.asarray(open_image(img))[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"not an image at all", "not an image")],
)
def test_bad_bytes_raise_readable_errors(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        open_image(data)


def test_truncated_and_missing(tmp_path):
    buf = io.BytesIO()
    golden().save(buf, "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        open_image(buf.getvalue()[:300])
    with pytest.raises(ImageDecodeError, match="not found"):
        open_image(tmp_path / "nope.jpg")


def test_decompression_bomb_is_refused():
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 Mpx in a few KB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageDecodeError, match="too large"):
        open_image(buf.getvalue())


def test_grayscale_and_crop_fraction():
    cfg = PreprocessConfig(image_size=10, crop=0.5, grayscale=True, mean=(0.5,), std=(0.25,))
    x = load_face(golden(), cfg)
    assert x.shape == (10, 10, 1)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_label_mapping_and_probability():
    assert LABELS == ("male", "female")
    assert [parse_label(w) for w in ("Male", "WOMAN", "men", "0", "1", "x")] == [
        0,
        1,
        0,
        0,
        1,
        None,
    ]
    assert [age_band(a) for a in (0, 3, 4, 12, 13, 19, 20, 39, 40, 59, 60, 99)] == [
        "0-3",
        "0-3",
        "4-12",
        "4-12",
        "13-19",
        "13-19",
        "20-39",
        "20-39",
        "40-59",
        "40-59",
        "60+",
        "60+",
    ]
    assert probability(np.array([0.0]))[0] == 0.5
    assert probability(np.array([2.0]), 2.0)[0] == pytest.approx(1 / (1 + np.exp(-1)))
