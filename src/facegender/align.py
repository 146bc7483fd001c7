"""Cut a detected face out of a photo so it looks like a training image (UTKFace-style crop).

The classifier learnt from UTKFace's "aligned & cropped" 200 x 200 images: eyes level, the face
filling the frame from eyebrows to chin. A face found in a photo is mapped onto the same frame
with a similarity transform (rotation from the eye line, uniform scale and shift fitted to its
five landmarks), so eye level, position and scale match what the model saw. The square crop it
returns then goes through :func:`facegender.preprocess.face_array` exactly like a training image.

The template below was measured, not guessed: ``benchmarks/measure_align_template.py`` ran the
YuNet detector on 400 UTKFace images (the first by sha1 of the file name, outside the last 10 %)
and took the median of each landmark, in units of the image side (interquartile ranges 0.025-0.04).

Known limit: YuNet's landmarks lean towards upright on tilted faces (on a face turned by 25
degrees its eye line reads about 9 degrees), so strongly tilted faces come out only partly
levelled; the classifier is trained with +-12 degrees of rotation, which covers the usual case.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from facegender.detect import Detection

# Median YuNet landmarks on UTKFace 200 x 200 crops, as (x, y) fractions of the side, in the
# order of facegender.detect.LANDMARK_NAMES: eye left, eye right, nose, mouth left, mouth right.
TEMPLATE = np.array(
    [[0.29, 0.285], [0.685, 0.295], [0.475, 0.5], [0.3075, 0.6775], [0.645, 0.685]],
    dtype=np.float64,
)
# Median YuNet box (x, y, w, h) on the same images: used when a detector gives no landmarks.
TEMPLATE_BOX = (0.075, 0.005, 0.84, 0.97)
# Crops are returned at the face's own resolution, bounded so that huge faces stay cheap.
MIN_SIDE, MAX_SIDE = 32, 256


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping points ``src`` to ``dst``: a 2 x 3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / s0.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def eyes_level_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Similarity ``src -> dst`` whose rotation puts the eyes (rows 0 and 1) at the same angle.

    Scale and shift are the least-squares fit to all points for that rotation. Fitting the
    rotation to all five points instead lets a wide smile or a turned head tilt the eye line by
    several degrees; UTKFace's crops have their eyes level (median roll 1.6 degrees).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    vs, vd = src[1] - src[0], dst[1] - dst[0]
    theta = np.arctan2(vd[1], vd[0]) - np.arctan2(vs[1], vs[0])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mu_s, mu_d = src.mean(0), dst.mean(0)
    rs = (src - mu_s) @ rot.T
    scale = float((rs * (dst - mu_d)).sum() / (rs**2).sum())
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def template_to_image(det: Detection) -> np.ndarray:
    """2 x 3 matrix from template units (0..1 of the crop side) to the photo's pixels."""
    x, y, w, h = det.box
    bx, by, bw, bh = TEMPLATE_BOX
    side_from_box = (w / bw + h / bh) / 2.0
    if det.landmarks is not None:
        m = eyes_level_transform(TEMPLATE, det.landmarks)
        side = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        # Landmarks of a strongly turned face can collapse; trust the box then.
        if 0.6 < side / max(side_from_box, 1e-6) < 1.6:
            return m
    s = side_from_box
    cx, cy = x + w / 2.0, y + h / 2.0
    return np.array([[s, 0.0, cx - s * (bx + bw / 2.0)], [0.0, s, cy - s * (by + bh / 2.0)]])


def model_to_image(det: Detection, crop: float, image_size: int) -> np.ndarray:
    """2 x 3 matrix from the classifier's input pixels to the photo's, for the crop of ``det``.

    :func:`facegender.preprocess.face_array` keeps the centred ``crop`` fraction of the aligned
    square and resizes it to ``image_size``; composed with :func:`template_to_image` that maps
    model pixel (u, v) to the photo. :mod:`facegender.explain` inverts it to paint heat maps.
    """
    k = crop / image_size
    to_unit = np.array([[k, 0.0, (1 - crop) / 2], [0.0, k, (1 - crop) / 2], [0.0, 0.0, 1.0]])
    return template_to_image(det) @ to_unit


def align_face(img: Image.Image, det: Detection) -> Image.Image:
    """The square UTKFace-style crop of ``det`` from ``img`` (RGB), at about the face's resolution.

    Pixels outside the photo are black, as in UTKFace crops of faces at the border.
    """
    m = template_to_image(det)
    side = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop side in photo pixels
    n = int(min(MAX_SIDE, max(MIN_SIDE, round(side))))
    src = img
    factor = int(side / n)
    if factor >= 2:
        # Shrink the face region first with a box filter: the affine warp below samples only
        # n x n points and would alias a face much larger than the output.
        corners = m @ np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float64).T
        left, top = np.floor(corners.min(1)).astype(int) - factor
        right, bottom = np.ceil(corners.max(1)).astype(int) + factor
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, img.width), min(bottom, img.height)
        if right - left >= factor and bottom - top >= factor:
            src = img.crop((left, top, right, bottom)).reduce(factor)
            m = m.copy()
            m[:, 2] -= (left, top)
            m /= factor
    # Output pixel (X, Y) is template point (X / n, Y / n); PIL wants output -> input coefficients.
    a = m[:, :2] / n
    coeffs = (a[0, 0], a[0, 1], m[0, 2], a[1, 0], a[1, 1], m[1, 2])
    return src.transform(
        (n, n), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
