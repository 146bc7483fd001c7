"""Detection and gender accuracy on photos with 1-3 real faces, and time per 640 x 480 photo.

Builds 640 x 480 photos by pasting held-out face crops from ../shared/data (every source of the
model's training run; ``--data``, UTKFace and kaggle-gender by default, where it records none)
onto generated backgrounds at random scales (60-220 px), tilts (+-10 degrees) and places, saves
each as JPEG, and runs the real predictor on the JPEG bytes (decode, detect,
align, classify) on one thread. Reports

  (a) % of photos with every face found, % with no false face, % of faces found;
  (b) gender accuracy through detect + align vs. the same faces' own data-set crops (and, to show
      what alignment buys, vs. a plain square crop around the detector's box);
  (c) milliseconds per photo end to end on one thread (wall and process CPU time).

Held-out faces: the validation split of the model's own training run when its config records
one (never trained on), else the files whose sha1(name) sorts into the last 10 %.

    python benchmarks/detect_accuracy.py --model runs/x --photos 300
    python benchmarks/detect_accuracy.py --max-side 320 384 448 512 640   # the frame-size sweep

With several ``--max-side`` values every size sees the same photos, interleaved photo by photo,
and a table of faces found, accuracy and ms per photo is printed (``by_max_side`` in the JSON).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy/yuface/torch load

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _machine import describe, machine  # noqa: E402
from _photos import compose, match  # noqa: E402
from PIL import Image  # noqa: E402

from facegender.checkpoint import write_json  # noqa: E402
from facegender.cpu import DETECTOR_THREADS  # noqa: E402
from facegender.detect import DEFAULT_MAX_SIDE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def held_out_faces(model: str | None, data: list[str]) -> tuple[list, str]:
    """Samples the model never trained on, and how they were chosen."""
    from facegender.checkpoint import read_config
    from facegender.data import read_data

    config = read_config(model)
    args = config.get("train_args")
    if args and not args.get("val"):
        from facegender.train import TrainConfig, prepare_data

        cfg = TrainConfig.from_dict(args)
        cfg.progress = False
        by_name = {Path(d).name: d for d in data}
        cfg.data = [by_name.get(Path(d).name, d) for d in cfg.data]
        if all(Path(d).is_dir() for d in cfg.data):
            _, ds, _, va_idx = prepare_data(cfg, log=lambda m: None, report=False)
            return [ds.samples[i] for i in va_idx], "validation split of the model's training run"
    ds = read_data(data)
    ordered = sorted(ds.samples, key=lambda s: hashlib.sha1(Path(s.path).name.encode()).digest())
    return ordered[int(len(ordered) * 0.9) :], "last 10 % of files by sha1(name)"


def box_crop(img: Image.Image, box: list[int]) -> Image.Image:
    """The naive crop: the square around the detector's box, no alignment."""
    x, y, w, h = box
    side = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    return img.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                     round(cy + side / 2)))  # fmt: skip


def make_photos(pool: list, n: int, rng) -> list[tuple[list, bytes, list]]:
    """``n`` JPEG photos of 1-3 held-out faces: (samples, JPEG bytes, true boxes) each."""
    from facegender.preprocess import open_image

    order = rng.permutation(len(pool))
    photos, nxt = [], 0
    for _ in range(n):
        k = int(rng.integers(1, 4))
        chosen = [pool[i] for i in order[nxt : nxt + k]]
        nxt += k
        if len(chosen) < k:
            break
        img, boxes = compose([open_image(s.path) for s in chosen], rng)
        if len(boxes) < len(chosen):  # could not place every face: skip this photo
            continue
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        photos.append((chosen, buf.getvalue(), boxes))
    return photos


def run_photos(preds: dict, photos: list) -> dict:
    """Detect and classify every photo with each predictor (interleaved photo by photo, so a
    change in the machine's load hits every setting alike): counts, per-face rows, timings."""
    from facegender.preprocess import face_array, open_image

    runs = {m: {"all_found": 0, "no_false": 0, "rows": [], "ms": [], "cpu_ms": []} for m in preds}
    for chosen, data, boxes in photos:
        decoded = open_image(data)
        for m, pred in preds.items():
            _one_photo(pred, runs[m], chosen, data, boxes, decoded, face_array)
    return runs


def _one_photo(pred, run: dict, chosen, data, boxes, decoded, face_array) -> None:
    clf, cfg = pred.classifier, pred.classifier.preprocess
    t0, c0 = time.perf_counter(), time.process_time()
    r = pred.predict(data)
    run["ms"].append((time.perf_counter() - t0) * 1000)
    run["cpu_ms"].append((time.process_time() - c0) * 1000)
    found = [f.box for f in r.faces]
    matched, false = match(boxes, found)
    run["all_found"] += len(matched) == len(boxes)
    run["no_false"] += not false
    box_arrays = [face_array(box_crop(decoded, found[j]), cfg) for j in matched.values()]
    p_box = iter(clf.probabilities(np.stack(box_arrays)).tolist() if box_arrays else [])
    for i, s in enumerate(chosen):
        j = matched.get(i)
        run["rows"].append({
            "sample": s, "source": s.source, "label": int(s.label), "found": j is not None,
            "p_detect": r.faces[j].female_probability if j is not None else None,
            "p_box": next(p_box) if j is not None else None,
        })  # fmt: skip


def _acc(rs, key):
    rs = [r for r in rs if r[key] is not None]
    return round(100.0 * np.mean([(r[key] >= 0.5) == r["label"] for r in rs]), 2) if rs else None


def block(rs):
    hit = [r for r in rs if r["found"]]
    return {
        "faces": len(rs),
        "faces_found_pct": round(100.0 * len(hit) / len(rs), 2) if rs else None,
        "acc_own_crops_all_faces": _acc(rs, "p_own"),
        "acc_own_crops_found_faces": _acc(hit, "p_own"),
        "acc_detect_align_found_faces": _acc(hit, "p_detect"),
        "acc_detect_box_crop_found_faces": _acc(hit, "p_box"),
    }


def summarise(run: dict, own: np.ndarray, max_side: int) -> dict:
    rows, ms, cpu_ms, n = run["rows"], run["ms"], run["cpu_ms"], len(run["ms"])
    for row, p in zip(rows, own.tolist(), strict=True):
        row["p_own"] = p
    return {
        "photos_every_face_found_pct": round(100.0 * run["all_found"] / n, 2),
        "photos_no_false_face_pct": round(100.0 * run["no_false"] / n, 2),
        **block(rows),
        "by_source": {
            src: block([r for r in rows if r["source"] == src])
            for src in sorted({r["source"] for r in rows})
        },  # fmt: skip
        # Wall time suffers when other work shares the cores; CPU time of this process much less.
        "ms_per_photo_640x480": {
            "wall_median": round(float(np.median(ms)), 1),
            "wall_mean": round(float(np.mean(ms)), 1),
            "wall_p90": round(float(np.percentile(ms, 90)), 1),
            "cpu_median": round(float(np.median(cpu_ms)), 1),
            "cpu_mean": round(float(np.mean(cpu_ms)), 1),
            "threads": 1,
            "detector_max_side": max_side,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--data", nargs="+",
                    default=[str(SHARED / "utkface"), str(SHARED / "kaggle-gender")])  # fmt: skip
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, nargs="+", default=[DEFAULT_MAX_SIDE],
                    help="detector frame size(s), longest side; several: each on the same "
                         "photos (a sweep)")  # fmt: skip
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "detect_accuracy.json"))
    args = ap.parse_args()
    if not all(Path(d).is_dir() for d in args.data):
        print(f"data not found: {args.data} (this benchmark needs ../shared/data)", file=sys.stderr)
        return 2

    from facegender.predict import Predictor
    from facegender.preprocess import load_face

    mach = machine(threads={"classifier": 1, "detector": DETECTOR_THREADS})
    print(describe(mach), file=sys.stderr)
    preds = {m: Predictor(args.model, threads=1, max_side=m) for m in args.max_side}
    clf = preds[args.max_side[0]].classifier
    pool, pool_kind = held_out_faces(args.model, args.data)
    photos = make_photos(pool, args.photos, np.random.default_rng(args.seed))
    runs = run_photos(preds, photos)
    first = runs[args.max_side[0]]["rows"]
    own = clf.probabilities(np.stack([load_face(r["sample"].path, clf.preprocess) for r in first]))
    by_side = {m: summarise(run, own, m) for m, run in runs.items()}
    result = {
        "model": args.model or "bundled",
        "model_name": clf.config["model"]["name"],
        "backend": clf.backend,
        "held_out_faces": pool_kind,
        "photos": len(photos),
        **by_side[args.max_side[0]],
        "seed": args.seed,
        "machine": mach,
    }
    if len(args.max_side) > 1:
        result["by_max_side"] = by_side
    print(json.dumps(result, indent=2))
    _print_sweep(by_side)
    write_json(args.json, result)
    return 0


def _print_sweep(by_side: dict) -> None:
    print("| max side | faces found | photos all found | no false face | acc detect+align "
          "| ms wall | ms CPU |", file=sys.stderr)  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |", file=sys.stderr)
    for m, r in by_side.items():
        t = r["ms_per_photo_640x480"]
        print(f"| {m} | {r['faces_found_pct']} % | {r['photos_every_face_found_pct']} % "
              f"| {r['photos_no_false_face_pct']} % | {r['acc_detect_align_found_faces']} % "
              f"| {t['wall_median']} | {t['cpu_median']} |", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
