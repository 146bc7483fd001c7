"""dlib's 128-D face descriptors of a list of images, then a gender probability for each.

Runs in dlib's own venv (``make dlib-venv``; it needs no facegender), called by
``recipes/dlib_teacher.py``, which explains why. Reads ``OUT/images.csv`` (path,label,split) and
writes ``OUT/probabilities.csv`` (path,p_female) and ``OUT/teacher.json`` (accuracy per source).

- Each image is taken whole as the face (the data sets' files are face crops): dlib's 5-point
  shape predictor places the landmarks in that box, inset by 8 %, and the ResNet reads the
  150 x 150 chip it aligns from them.
- Descriptors are kept per chunk of 1,000 images in ``OUT/embeddings/``, so an interrupted pass
  computes only the chunks it lacks. One process per core (dlib's ResNet runs on one thread).
- A logistic regression reads gender from the descriptors. It is fitted on training images only:
  each training image is scored by the fit of the folds it is not in (so its probability is not
  one the fit saw it for), each validation image by the fit on all training images.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CHUNK = 1000
MODELS: dict = {}


def _load_models() -> None:
    import dlib
    import face_recognition_models as frm

    MODELS["shape"] = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    MODELS["net"] = dlib.face_recognition_model_v1(frm.face_recognition_model_location())


def describe(path: str) -> np.ndarray:
    """One image's descriptor, the whole image taken as the face box (inset by 8 %)."""
    import dlib
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    m = int(0.08 * min(h, w))
    shape = MODELS["shape"](img, dlib.rectangle(m, m, w - m, h - m))
    return np.asarray(MODELS["net"].compute_face_descriptor(img, shape), dtype=np.float32)


def _chunk(job: tuple[Path, list[str]]) -> str:
    out, paths = job
    emb = np.stack([describe(p) for p in paths])
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, paths=np.array(paths), emb=emb)
    os.replace(tmp, out)
    return out.name


def descriptors(out: Path, paths: list[str], jobs: int) -> np.ndarray:
    """Every image's descriptor, computing only the chunks ``out/embeddings`` lacks."""
    folder = out / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [
        (folder / f"{i // CHUNK:05d}.npz", paths[i : i + CHUNK])
        for i in range(0, len(paths), CHUNK)
    ]
    todo = [c for c in chunks if not _have(*c)]
    print(
        f"descriptors: {len(chunks) - len(todo)} of {len(chunks)} chunks kept, {len(todo)} to do",
        flush=True,
    )
    t0 = time.time()
    with Pool(jobs, initializer=_load_models) as pool:
        for k, name in enumerate(pool.imap_unordered(_chunk, todo), 1):
            eta = (time.time() - t0) / k * (len(todo) - k) / 60
            print(f"  chunk {name} ({k}/{len(todo)}), {eta:.0f} min left", flush=True)
    return np.concatenate([np.load(f)["emb"] for f, _ in chunks])


def _have(file: Path, paths: list[str]) -> bool:
    return file.is_file() and np.load(file)["paths"].tolist() == paths


def fit_probabilities(emb, y, train, folds: int, c: float) -> np.ndarray:
    """P(female) of every image: cross-fitted on training images, fitted on all for the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    lr = LogisticRegression(C=c, max_iter=2000)
    p = np.zeros(len(y))
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    p[train] = cross_val_predict(lr, emb[train], y[train], cv=cv, method="predict_proba")[:, 1]
    p[~train] = lr.fit(emb[train], y[train]).predict_proba(emb[~train])[:, 1]
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path, help="folder with images.csv; the results go there")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--C", type=float, default=3.0, help="inverse L2 strength of the regression")
    args = ap.parse_args()
    with (args.out / "images.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    t0 = time.time()
    emb = descriptors(args.out, [r["path"] for r in rows], args.jobs)
    y = np.array([int(r["label"]) for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    p = fit_probabilities(emb, y, train, args.folds, args.C)
    with (args.out / "probabilities.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "p_female"])
        w.writerows((r["path"], f"{v:.6f}") for r, v in zip(rows, p, strict=True))
    ok = (p > 0.5) == y
    sources = np.array([r["source"] for r in rows])
    acc = {s: float(ok[~train & (sources == s)].mean()) for s in sorted(set(sources[~train]))}
    acc_train = float(ok[train].mean())
    group = np.array(
        [
            f"{r['source']} {r.get('race', '')} {'female' if r['label'] == '1' else 'male'}"
            for r in rows
        ]
    )
    groups = {g: float(ok[~train & (group == g)].mean()) for g in sorted(set(group[~train]))}
    report = {
        "validation_accuracy": float(ok[~train].mean()),
        "validation_per_source": acc,
        "validation_per_source_race_gender": groups,
        "train_accuracy_cross_fitted": acc_train,
        "images": len(rows),
        "folds": args.folds,
        "C": args.C,
        "minutes": (time.time() - t0) / 60,
        "command": " ".join(sys.argv),
    }
    (args.out / "teacher.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
