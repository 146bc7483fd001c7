"""Compose test photos: face crops pasted onto generated backgrounds (shared by the benchmarks).

Backgrounds are procedural (gradients, shapes, blur, noise), so they never hold a real face and
need no data. Each face is pasted as a soft-edged patch at a random scale, small tilt and place,
without overlapping another; the patch box is the ground truth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def background(rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> Image.Image:
    w, h = size
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
    ramp = c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]
    a = np.broadcast_to(ramp[None] if len(t) == w else ramp[:, None], (h, w, 3))
    img = Image.fromarray(a.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 15))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 300))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 4))))
    noise = rng.normal(0, rng.uniform(2, 10), (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def _soft_mask(size: tuple[int, int], feather: float = 0.06) -> Image.Image:
    w, h = size
    fx, fy = max(1.0, w * feather), max(1.0, h * feather)
    x = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / fx
    y = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / fy
    m = np.clip(np.minimum(y[:, None], x[None, :]), 0, 1)
    return Image.fromarray((m * 255).astype(np.uint8))


def compose(
    faces: list[Image.Image],
    rng: np.random.Generator,
    size: tuple[int, int] = (640, 480),
    sides: tuple[int, int] = (60, 220),
    max_tilt: float = 10.0,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Paste ``faces`` (RGB crops) onto a background; returns the photo and each face's box.

    A face that cannot be placed without overlap after many tries is left out (its box is then
    missing from the list, so callers should check ``len(boxes)``).
    """
    img = background(rng, size)
    boxes: list[tuple[int, int, int, int]] = []
    for face in faces:
        side = int(rng.integers(sides[0], sides[1] + 1))
        w = side
        h = max(1, round(side * face.height / face.width))
        patch = face.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        mask = _soft_mask((w, h))
        tilt = float(rng.uniform(-max_tilt, max_tilt))
        if tilt:
            patch = patch.rotate(tilt, Image.Resampling.BILINEAR, expand=True)
            mask = mask.rotate(tilt, Image.Resampling.BILINEAR, expand=True)
        pw, ph = patch.size
        if pw >= size[0] or ph >= size[1]:
            continue
        for _ in range(100):
            x, y = int(rng.integers(0, size[0] - pw)), int(rng.integers(0, size[1] - ph))
            box = (x + (pw - w) // 2, y + (ph - h) // 2, w, h)
            if all(_apart(box, b) for b in boxes):
                img.paste(patch, (x, y), mask)
                boxes.append(box)
                break
    return img, boxes


def _apart(a, b, gap: int = 10) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


def match(truth: list, found: list, min_iou: float = 0.3) -> tuple[dict[int, int], list[int]]:
    """Greedy one-to-one matching of found boxes to true boxes by IoU.

    Returns {truth index: found index} and the found indices that matched nothing (false faces).
    """
    pairs = sorted(
        ((_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
        reverse=True,
    )
    used_t, used_f, matched = set(), set(), {}
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i in used_t or j in used_f:
            continue
        matched[i] = j
        used_t.add(i)
        used_f.add(j)
    return matched, [j for j in range(len(found)) if j not in used_f]


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0
