"""Measure where YuNet puts the face in UTKFace's "aligned & cropped" 200 x 200 images.

The medians printed here are the template that :mod:`facegender.align` hard-codes, so a face found
in a photo is cropped with the same eye level, position and scale as the training crops.

    python benchmarks/measure_align_template.py --data ../shared/data/utkface --n 400
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from facegender.checkpoint import write_json
from facegender.detect import LANDMARK_NAMES, YuNetDetector
from facegender.preprocess import open_image


def sample_names(folder: Path, n: int, skip_last: float = 0.1) -> list[Path]:
    """The first ``n`` files by sha1 of their name, outside the last 10 % kept for evaluation."""
    names = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
        key=lambda p: hashlib.sha1(p.name.encode()).hexdigest(),
    )
    keep = names[: int(len(names) * (1 - skip_last))]
    return keep[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/utkface")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", default="benchmarks/results/align_template.json")
    args = ap.parse_args()

    det = YuNetDetector(threads=1)
    lms, boxes, sizes, missed = [], [], [], 0
    t0 = time.perf_counter()
    for p in sample_names(Path(args.data), args.n):
        img = open_image(p)
        found = det.detect(img)
        if not found:
            missed += 1
            continue
        d = found[0]  # the most confident face; UTKFace crops hold one face
        lms.append(d.landmarks / np.float32(img.width))  # in units of the image side
        boxes.append(np.array(d.box) / img.width)
        sizes.append(img.width)
    lms_a, boxes_a = np.stack(lms), np.stack(boxes)
    med = np.median(lms_a, axis=0)
    eyes = lms_a[:, :2]
    roll = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
    result = {
        "images": len(lms) + missed,
        "detected": len(lms),
        "image_sides": sorted(set(sizes)),
        "landmarks_median": {
            n: [round(float(v), 4) for v in med[i]] for i, n in enumerate(LANDMARK_NAMES)
        },
        "landmarks_iqr": {
            n: [
                round(float(v), 4)
                for v in (
                    np.percentile(lms_a[:, i], 75, axis=0) - np.percentile(lms_a[:, i], 25, axis=0)
                )
            ]
            for i, n in enumerate(LANDMARK_NAMES)
        },
        "box_median_xywh": [round(float(v), 4) for v in np.median(boxes_a, axis=0)],
        "eye_distance_median": round(float(np.median(eyes[:, 1, 0] - eyes[:, 0, 0])), 4),
        "roll_degrees_median_abs": round(float(np.median(np.abs(roll))), 2),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
