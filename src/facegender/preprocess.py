"""The one preprocessing path from an image to the classifier's input.

Training, evaluation, prediction, the web service and the ONNX runtime all call these functions,
so a face crop is decoded, oriented, cropped, resized and laid out identically everywhere.

Colour order: **RGB** everywhere. Arrays are ``uint8`` ``H x W x C`` until :func:`to_batch`, which
gives ``float32`` ``N x C x H x W`` in ``[0, 1]``. Mean/std normalisation happens inside the model
(and therefore inside the exported ONNX graph), from the values stored in the checkpoint.

This module needs only numpy and Pillow: the torch-free runtime imports it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

# File names read as images, by folder walks of both data sets and predict (any case).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
# A truncated file must fail loudly, never decode as half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Refuse decompression bombs (Pillow warns above this many pixels and errors above twice it).
MAX_PIXELS = 80_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# Why an image could not be read, as data: the web service maps the code (never the wording of
# the message) to its HTTP status, and predict's rows carry it beside the message.
DECODE_ERRORS = {
    "not_found": "file not found",
    "empty": "empty file",
    "truncated": "truncated image",
    "not_image": "not an image",
    "too_large": "image too large",
    "decode_failed": "cannot decode",
}


class ImageDecodeError(ValueError):
    """An input that is not a decodable image; ``code`` is one of :data:`DECODE_ERRORS`."""

    def __init__(self, message: str, code: str = "decode_failed"):
        super().__init__(message)
        self.code = code


def _fail(code: str, detail: str | None = None) -> ImageDecodeError:
    text = DECODE_ERRORS[code]
    return ImageDecodeError(f"{text}: {detail}" if detail else text, code)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a face crop becomes model input; stored in every checkpoint's ``config.json``.

    ``crop`` is the fraction of the centred square kept before resizing (1.0 keeps the whole
    square). ``grayscale`` gives one channel. ``mean``/``std`` are applied inside the model.
    """

    image_size: int = 64
    crop: float = 1.0
    grayscale: bool = False
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))
    std: tuple[float, ...] = field(default=(0.25, 0.25, 0.25))

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(v) for v in known[k])
        cfg = cls(**known)
        if cfg.grayscale and len(cfg.mean) != 1:
            cfg = cls(**{**known, "mean": cfg.mean[:1], "std": cfg.std[:1]})
        return cfg


def open_image(source: Any, bgr: bool = False) -> Image.Image:
    """Decode ``source`` (path, bytes, file object, PIL image or numpy array) to an RGB PIL image.

    EXIF orientation is applied, CMYK/palette/16-bit/alpha inputs are converted to 8-bit RGB (alpha
    is composited on white). ``bgr=True`` says a numpy array is in OpenCV's BGR order.
    Raises :class:`ImageDecodeError` with a human-readable reason on failure.
    """
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, np.ndarray):
            img = _from_array(source, bgr)
        else:
            if isinstance(source, bytes | bytearray | memoryview):
                if len(source) == 0:
                    raise _fail("empty")
                source = io.BytesIO(bytes(source))
            elif isinstance(source, str | Path):
                p = Path(source)
                if not p.exists():
                    raise _fail("not_found")
                if p.stat().st_size == 0:
                    raise _fail("empty")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(source)
                img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _fail("too_large", str(e)) from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise _fail("truncated") from None
        if "cannot identify image file" in msg:
            raise _fail("not_image") from None
        raise _fail("decode_failed", msg) from None
    except (ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        raise _fail("decode_failed", str(e)) from None


def _from_array(a: np.ndarray, bgr: bool) -> Image.Image:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"array of shape {a.shape} is not an image", "not_image")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.max(initial=0) <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if bgr:
        a = a[:, :, [2, 1, 0, 3][: a.shape[2]]]
    return Image.fromarray(np.ascontiguousarray(a), "RGBA" if a.shape[2] == 4 else "RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max(initial=0)
        scale = 255.0 / 65535.0 if hi > 255 else 1.0
        return Image.fromarray(np.clip(a * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def crop_box(width: int, height: int, crop: float = 1.0) -> tuple[float, float, float, float]:
    """The centred square (scaled by ``crop``) of a ``width x height`` image, as (l, t, r, b)."""
    side = min(width, height) * crop
    left, top = (width - side) / 2.0, (height - side) / 2.0
    return (left, top, left + side, top + side)


def crop_to_image(width: int, height: int, cfg: PreprocessConfig) -> np.ndarray:
    """2 x 3 matrix from the model's input pixels to the pixels of the image :func:`face_array`
    was given (its :func:`crop_box` resized to ``image_size``)."""
    left, top, right, _ = crop_box(width, height, cfg.crop)
    k = (right - left) / cfg.image_size
    return np.array([[k, 0.0, left], [0.0, k, top]])


def face_array(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Crop the centred square of a face image, resize it, return ``uint8`` ``S x S x C`` (RGB)."""
    box = crop_box(img.width, img.height, cfg.crop)
    size = (cfg.image_size, cfg.image_size)
    out = img.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    if cfg.grayscale:
        return np.asarray(out.convert("L"), dtype=np.uint8)[:, :, None]
    return np.asarray(out, dtype=np.uint8)


def load_face(source: Any, cfg: PreprocessConfig, bgr: bool = False) -> np.ndarray:
    """Decode a face-crop image and return its model-ready ``uint8`` array."""
    return face_array(open_image(source, bgr=bgr), cfg)


def to_batch(arrays: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Stack ``uint8`` ``H x W x C`` arrays into ``float32`` ``N x C x H x W`` in ``[0, 1]``."""
    a = np.stack(arrays) if isinstance(arrays, list) else np.asarray(arrays)
    if a.ndim == 3:
        a = a[None]
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


def probability(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated P(female) from raw logits: ``sigmoid(logit / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return 1.0 / (1.0 + np.exp(-z))
