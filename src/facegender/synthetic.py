"""Generated stand-in faces for tests, demos and benchmarks where real photos cannot ship.

The two classes differ in visible, learnable ways (hair length, face width, lip colour), so a
model trained on them must beat chance by far; nothing else about them is realistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def synthetic_face(label: int, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A cartoon head on a plain background: 0 = 'male' (short hair, wide jaw), 1 = 'female'."""
    bg = tuple(int(v) for v in rng.integers(60, 200, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = size / 96
    skin = tuple(
        int(v) for v in np.clip(np.array([210, 160, 130]) * rng.uniform(0.5, 1.15), 0, 255)
    )
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    cx, cy = size / 2 + rng.uniform(-4, 4) * s, size / 2 + rng.uniform(-3, 3) * s
    w = (30 if label == 0 else 24) * s * rng.uniform(0.92, 1.08)
    h = 36 * s * rng.uniform(0.95, 1.05)
    if label == 1:  # long hair behind the face
        d.rectangle([cx - w - 8 * s, cy - h, cx + w + 8 * s, cy + h + 14 * s], fill=hair)
    d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    d.chord([cx - w, cy - h - 4 * s, cx + w, cy - h / 3], 180, 360, fill=hair)
    for ex in (-w / 2.5, w / 2.5):
        d.ellipse([cx + ex - 3 * s, cy - 8 * s, cx + ex + 3 * s, cy - 3 * s], fill=(30, 30, 30))
    lip = (190, 40, 60) if label == 1 else (150, 90, 80)
    d.ellipse([cx - 7 * s, cy + 14 * s, cx + 7 * s, cy + 19 * s], fill=lip)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_utkface_folder(root: str | Path, n: int = 64, seed: int = 0, size: int = 96) -> Path:
    """Write ``n`` generated faces named like UTKFace (``age_gender_race_date.jpg.chip.jpg``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label, age, race = i % 2, int(rng.integers(1, 90)), int(rng.integers(0, 5))
        name = f"{age}_{label}_{race}_2017011{seed % 10}{i:09d}.jpg.chip.jpg"
        synthetic_face(label, rng, size).save(root / name, quality=92)
    return root


def write_class_folders(
    root: str | Path,
    n: int = 64,
    seed: int = 1,
    size: int = 96,
    names: tuple[str, str] = ("male", "female"),
) -> Path:
    """Write ``n`` generated faces into ``root/male`` and ``root/female`` (or the given names)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 2
        d = root / names[label]
        d.mkdir(parents=True, exist_ok=True)
        w = int(size * rng.uniform(0.75, 0.9))
        synthetic_face(label, rng, size).resize((w, size)).save(d / f"{i:05d}.jpg", quality=92)
    return root


def write_fairface_folder(root: str | Path, n: int = 64, seed: int = 2, size: int = 96) -> Path:
    """Write ``n`` generated faces in FairFace's layout: ``train/N.jpg`` and ``labels.csv``."""
    from facegender.labels import FAIRFACE_AGES, FAIRFACE_RACES, LABELS

    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file,age,gender,race,service_test"]
    for i in range(1, n + 1):
        label = i % 2
        synthetic_face(label, rng, size).save(root / "train" / f"{i}.jpg", quality=92)
        age, race = rng.choice(FAIRFACE_AGES), rng.choice(FAIRFACE_RACES)
        rows.append(f"train/{i}.jpg,{age},{LABELS[label].title()},{race},FALSE")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
