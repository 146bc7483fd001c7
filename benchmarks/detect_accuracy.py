"""Detection and gender accuracy on photos with 1-3 real faces, and time per 640 x 480 photo.

Builds 640 x 480 photos by pasting held-out face crops from ../shared/data (UTKFace and the
kaggle gender set) onto generated backgrounds at random scales (60-220 px), tilts (+-10 degrees)
and places, saves each as JPEG, and runs the real predictor on the JPEG bytes (decode, detect,
align, classify) on one thread. Reports

  (a) % of photos with every face found, % with no false face, % of faces found;
  (b) gender accuracy through detect + align vs. the same faces' own data-set crops (and, to show
      what alignment buys, vs. a plain square crop around the detector's box);
  (c) milliseconds per photo end to end on one thread (wall and process CPU time).

Held-out faces: the validation split of the model's own training run when its config records
one (never trained on), else the files whose sha1(name) sorts into the last 10 %.

    python benchmarks/detect_accuracy.py --model runs/x --photos 300
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
from _photos import compose, match  # noqa: E402
from PIL import Image  # noqa: E402

from facegender.checkpoint import write_json  # noqa: E402

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
            _, ds, _, va_idx = prepare_data(cfg, log=lambda m: None)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--data", nargs="+",
                    default=[str(SHARED / "utkface"), str(SHARED / "kaggle-gender")])  # fmt: skip
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, default=512, help="detector frame size (longest side)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "detect_accuracy.json"))
    args = ap.parse_args()
    if not all(Path(d).is_dir() for d in args.data):
        print(f"data not found: {args.data} (this benchmark needs ../shared/data)", file=sys.stderr)
        return 2

    from facegender.predict import Predictor
    from facegender.preprocess import face_array, load_face, open_image

    pred = Predictor(args.model, threads=1, max_side=args.max_side)
    clf, cfg = pred.classifier, pred.classifier.preprocess
    pool, pool_kind = held_out_faces(args.model, args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(pool))

    photos = faces_total = all_found = no_false = 0
    rows = []  # one per pasted face: source, label, found, p_detect, p_box, p_own
    ms, cpu_ms = [], []
    nxt = 0
    for _ in range(args.photos):
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
        data = buf.getvalue()
        t0, c0 = time.perf_counter(), time.process_time()
        r = pred.predict(data)
        ms.append((time.perf_counter() - t0) * 1000)
        cpu_ms.append((time.process_time() - c0) * 1000)
        found = [f.box for f in r.faces]
        matched, false = match(boxes, found)
        photos += 1
        faces_total += len(boxes)
        all_found += len(matched) == len(boxes)
        no_false += not false
        decoded = open_image(data)
        box_arrays = [face_array(box_crop(decoded, found[j]), cfg) for j in matched.values()]
        p_box = iter(clf.probabilities(np.stack(box_arrays)).tolist() if box_arrays else [])
        for i, s in enumerate(chosen):
            j = matched.get(i)
            rows.append({
                "sample": s, "source": s.source, "label": int(s.label), "found": j is not None,
                "p_detect": r.faces[j].female_probability if j is not None else None,
                "p_box": next(p_box) if j is not None else None,
            })  # fmt: skip
    own = clf.probabilities(np.stack([load_face(r["sample"].path, cfg) for r in rows]))
    for row, p in zip(rows, own.tolist(), strict=True):
        row["p_own"] = p

    def acc(rs, key):
        rs = [r for r in rs if r[key] is not None]
        return (
            round(100.0 * np.mean([(r[key] >= 0.5) == r["label"] for r in rs]), 2) if rs else None
        )

    def block(rs):
        hit = [r for r in rs if r["found"]]
        return {
            "faces": len(rs),
            "faces_found_pct": round(100.0 * len(hit) / len(rs), 2) if rs else None,
            "acc_own_crops_all_faces": acc(rs, "p_own"),
            "acc_own_crops_found_faces": acc(hit, "p_own"),
            "acc_detect_align_found_faces": acc(hit, "p_detect"),
            "acc_detect_box_crop_found_faces": acc(hit, "p_box"),
        }

    result = {
        "model": args.model or "bundled",
        "model_name": clf.config["model"]["name"],
        "backend": clf.backend,
        "held_out_faces": pool_kind,
        "photos": photos,
        "photos_every_face_found_pct": round(100.0 * all_found / photos, 2),
        "photos_no_false_face_pct": round(100.0 * no_false / photos, 2),
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
            "detector_max_side": args.max_side,
        },
        "seed": args.seed,
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
