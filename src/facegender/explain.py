"""Why did the model say so? Occlusion saliency per face, painted back onto the photo.

The method needs forward passes only, so it runs on the torch-free ONNX runtime exactly as on
PyTorch: a square patch of the face crop the classifier saw is filled with the crop's mean colour,
at every position of a grid, all positions in batches; a position's value is how much the logit
moved away from the predicted class, ``sign(z) * (z - z_occluded)``, in logit units. Positive:
that region supported the answer; negative: it argued for the other class. Each pixel's heat is
the mean over the patches that cover it.

The crop is the one :class:`facegender.predict.FaceCropper` made (detector + :mod:`facegender.align`
+ preprocessing), and its ``model -> photo`` similarity (:func:`facegender.align.model_to_image`)
is inverted to paint the heat over the photo, so the map sits where the face is, tilted with it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

# Patch side and stride as fractions of the model's input side: 13 x 13 positions at any size.
PATCH, STRIDE = 0.25, 0.0625


@dataclass
class Saliency:
    """One face's occlusion map: ``grid`` (rows x cols, logit units) and ``heat`` (S x S)."""

    grid: np.ndarray
    heat: np.ndarray
    logit: float
    patch: int
    stride: int

    def values(self) -> dict[str, Any]:
        """The small JSON form: the grid, and where each cell sits in the model's input."""
        return {
            "grid": np.round(self.grid, 4).tolist(),
            "patch": self.patch,
            "stride": self.stride,
            "image_size": int(self.heat.shape[0]),
            "logit": round(float(self.logit), 4),
            "unit": "logit change away from the predicted class when the patch is hidden",
        }


def positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets of the patches along one side, the last flush with the edge."""
    last = size - patch
    out = list(range(0, last + 1, stride))
    return out if out[-1] == last else [*out, last]


def occlude(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``array`` (S x S x C uint8) with the pixels where ``mask`` is true set to its mean colour."""
    fill = array.reshape(-1, array.shape[-1]).mean(0).round().astype(np.uint8)
    out = array.copy()
    out[mask] = fill
    return out


def saliency(classifier, array: np.ndarray, patch: float = PATCH, stride: float = STRIDE,
             batch_size: int = 64) -> Saliency:  # fmt: skip
    """The occlusion map of one model-ready face array (``S x S x C`` uint8) under ``classifier``
    (anything with ``logits(arrays)``: :class:`~facegender.runtime.OnnxClassifier` or torch)."""
    size = array.shape[0]
    p = max(1, round(patch * size))
    s = max(1, round(stride * size))
    offs = positions(size, p, s)
    batch = np.empty((len(offs) ** 2, *array.shape), dtype=np.uint8)
    masks = np.zeros((len(offs) ** 2, size, size), dtype=bool)
    for k, (y, x) in enumerate((y, x) for y in offs for x in offs):
        masks[k, y : y + p, x : x + p] = True
        batch[k] = occlude(array, masks[k])
    z = float(classifier.logits(array[None])[0])
    z_occ = classifier.logits(batch, batch_size=batch_size)
    drop = np.sign(z or 1.0) * (z - z_occ)
    grid = drop.reshape(len(offs), len(offs))
    cover = masks.sum(0)
    heat = np.tensordot(drop, masks, axes=1) / np.maximum(cover, 1)
    return Saliency(grid.astype(np.float32), heat.astype(np.float32), z, p, s)


# -- painting ------------------------------------------------------------------------------------


def smooth(heat: np.ndarray, radius: int) -> np.ndarray:
    """Two passes of a (2r+1) box filter per axis, about a Gaussian: for display only, so the
    patch grid does not show as blocks; the values in JSON stay the measured ones."""
    out = np.asarray(heat, dtype=np.float64)
    k = np.ones(2 * radius + 1) / (2 * radius + 1)
    for _ in range(2):
        for axis in (0, 1):
            padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
                            mode="edge")  # fmt: skip
            out = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, padded)
    return out.astype(np.float32)


def _colours(heat: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB (red: supported the answer, blue: against it) and alpha for a heat map."""
    heat = smooth(heat, max(1, heat.shape[0] // 16))
    scale = scale or float(np.abs(heat).max()) or 1.0
    h = np.clip(heat / scale, -1.0, 1.0)
    rgb = np.zeros((*h.shape, 3), dtype=np.float32)
    rgb[..., 0] = np.where(h > 0, 255, 40)
    rgb[..., 1] = np.where(h > 0, 200 * (1 - h), 120 * (1 + h))
    rgb[..., 2] = np.where(h > 0, 0, 255)
    alpha = 0.65 * np.sqrt(np.abs(h))
    return rgb, alpha


def overlay(img: Image.Image, heat: np.ndarray, model_to_photo: np.ndarray) -> Image.Image:
    """``img`` with ``heat`` (the model's S x S input grid) warped onto it and blended.

    ``model_to_photo``: 2 x 3 matrix from model-input pixels to photo pixels; PIL wants the
    inverse (photo -> model) to sample the map at every photo pixel.
    """
    m = np.vstack([np.asarray(model_to_photo, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)[:2].ravel()
    rgb, alpha = _colours(heat)
    n = heat.shape[0]
    edge = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
    taper = np.clip(edge / max(1.0, n / 12), 0, 1)  # fade out at the crop's border
    alpha = alpha * np.outer(taper, taper)
    layers = [Image.fromarray(np.ascontiguousarray(rgb[..., c]), "F") for c in range(3)]
    layers.append(Image.fromarray(alpha.astype(np.float32), "F"))
    warped = [
        np.asarray(
            layer.transform(img.size, Image.Transform.AFFINE, tuple(inv), Image.Resampling.BILINEAR)
        )
        for layer in layers
    ]  # outside the crop PIL fills 0: alpha 0, the photo shows through
    a = np.clip(warped[3], 0, 1)[..., None]
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    out = base * (1 - a) + np.stack(warped[:3], -1) * a
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def crop_overlay(array: np.ndarray, heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """The heat blended over the model-ready crop itself (the report's mistakes grid)."""
    rgb, alpha = _colours(heat, scale)
    base = np.asarray(array, dtype=np.float32)
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    out = base * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def png_base64(img: Image.Image) -> str:
    return base64.b64encode(png_bytes(img)).decode("ascii")


@dataclass
class FaceExplanation:
    """One face: the prediction, its saliency and where its crop sits on the photo."""

    face: Any  # facegender.predict.Face
    saliency: Saliency
    model_to_photo: np.ndarray
    index: int = 0  # the face's position in the image's result

    def overlay(self, img: Image.Image) -> Image.Image:
        """``img`` (the photo it came from) with this face's heat map painted over it."""
        return overlay(img, self.saliency.heat, self.model_to_photo)

    def to_dict(self, img: Image.Image | None = None, values: bool = True,
                max_side: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The face's JSON; with ``img`` the heat map over the photo as ``overlay_png``
        (base64), downscaled to ``max_side`` when given."""
        d = {"face": self.index, **self.face.to_dict()}
        if values:
            d["saliency"] = self.saliency.values()
        if img is not None:
            im = self.overlay(img)
            if max_side and max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            d["overlay_png"] = png_base64(im)
        return d


@dataclass
class Explanation:
    """:meth:`facegender.predict.Predictor.explain`'s answer for one image."""

    result: Any  # facegender.predict.ImageResult
    image: Image.Image | None
    faces: list[FaceExplanation] = field(default_factory=list)

    def overlay(self, position: int = 0) -> Image.Image:
        """The photo with the heat map of ``faces[position]`` painted over it."""
        return self.faces[position].overlay(self.image)


def deletion_scores(classifier, array: np.ndarray, sal: Saliency, fraction: float = 0.15):
    """The deletion test of a map: hide the ``fraction`` of pixels it ranks most salient, then
    the fraction it ranks least salient (smallest ``|heat|``), each filled like :func:`occlude`.

    Returns (drop of the most salient, absolute logit change of the least salient), the drop
    measured away from the predicted class. A map that means something has the first larger.
    """
    flat = sal.heat.ravel()
    k = max(1, round(fraction * flat.size))
    top = np.zeros(flat.size, bool)
    top[np.argsort(-flat, kind="stable")[:k]] = True
    least = np.zeros(flat.size, bool)
    least[np.argsort(np.abs(flat), kind="stable")[:k]] = True
    shape = sal.heat.shape
    z = classifier.logits(
        np.stack([occlude(array, top.reshape(shape)), occlude(array, least.reshape(shape))])
    )
    sign = np.sign(sal.logit or 1.0)
    return float(sign * (sal.logit - z[0])), float(abs(sal.logit - z[1]))
