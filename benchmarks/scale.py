"""Images per second of ``predict --engine ray`` with 1 and 2 single-threaded Ray workers.

Generates ``--photos`` 640 x 480 JPEGs with 1-3 faces each (the generator of
``predict_folder.py``), then predicts them three ways, every worker single-threaded:

* ``local``: the plain single-process path (:class:`Predictor`, one thread, no worker processes);
* ``ray xK``: :func:`facegender.predict_ray.run_predict_ray` with K Ray workers on an embedded
  K-CPU cluster started beforehand (its start-up time is reported on its own line).

``images/s`` is the whole run (actor start-up and model loading included, the cluster's own
start-up not); the bar is on it: 2 workers give at least 1.6x the images/s of 1. ``steady/s``
counts from the first 10 % of the rows to the last, for information: rows arrive one block at a
time, so it is only meaningful when there are many blocks (a few thousand photos).

With ``--train`` it also times one epoch of ``torchrun --nproc_per_node 1`` and ``2`` (one thread
each) on generated faces.
Results go to benchmarks/results/scale.json.

    python benchmarks/scale.py --photos 2000              # the measurement
    python benchmarks/scale.py --photos 100 --train-images 256 --train   # a quick check
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # every worker single-threaded, before any import

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _machine import machine  # noqa: E402
from predict_folder import make_folder  # noqa: E402

from facegender.checkpoint import write_json  # noqa: E402
from facegender.cpu import classifier_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def time_local(folder: Path, model: str | None, batch_size: int) -> dict:
    from facegender.predict import Predictor
    from facegender.predict_io import iter_image_paths

    t0 = time.perf_counter()
    predictor = Predictor(model, threads=1, batch_size=batch_size)
    stamps = [time.perf_counter() for _ in predictor.predict_iter(iter_image_paths([folder]))]
    wall = time.perf_counter() - t0
    n = len(stamps)
    return {"engine": "local", "workers": 1, "images": n, "seconds": round(wall, 2),
            "images_per_s": round(n / wall, 2), "steady_per_s": steady(stamps)}  # fmt: skip


def steady(stamps: list[float]) -> float:
    """Rows per second from the first 10 % of the rows to the last (start-up left out)."""
    k = max(1, len(stamps) // 10)
    span = stamps[-1] - stamps[k - 1] if len(stamps) > k else 0.0
    return round((len(stamps) - k) / span, 2) if span > 0 else 0.0


def time_ray(folder: Path, workers: int, model: str | None, batch_size: int, tmp: Path) -> dict:
    import ray

    from facegender.predict_ray import run_predict_ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
    cluster_s = time.perf_counter() - t0
    try:
        out = tmp / f"ray{workers}.jsonl"
        stamps: list[float] = []
        t0 = time.perf_counter()
        counts = run_predict_ray(
            [str(folder)], str(out), model=model, workers=workers, batch_size=batch_size,
            progress=False, on_result=lambda r: stamps.append(time.perf_counter()),
        )  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    n = counts["ok"] + counts["no_face"] + counts["error"]
    return {"engine": "ray", "workers": workers, "images": n, "seconds": round(wall, 2),
            "images_per_s": round(n / wall, 2), "steady_per_s": steady(stamps),
            "cluster_start_s": round(cluster_s, 2),
            "statuses": {k: counts[k] for k in ("ok", "no_face", "error")}}  # fmt: skip


def time_train(procs: int, data: Path, tmp: Path, model: str, images: int) -> dict:
    out = tmp / f"train{procs}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(procs), "-m", "facegender", "train", "--data", str(data),
           "--model", model, "--image-size", "64", "--epochs", "1", "--batch-size", "64",
           "--threads", "1", "--no-progress", "--cache-dir", str(tmp / "cache"),
           "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    epoch = json.loads((out / "history.json").read_text())[0]
    trained = int(json.loads((out / "config.json").read_text())["data"]["train"])
    return {"processes": procs, "train_images": trained,
            "epoch_seconds": round(epoch["seconds"], 2),
            "train_images_per_s": round(trained / epoch["seconds"], 1),
            "wall_seconds": round(wall, 1), "val_acc": round(epoch["val_acc"], 4)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dir", default=None, help="photo folder to (re)use (default: a temp dir)")
    ap.add_argument("--train", action="store_true", help="also time torchrun 1 vs 2 processes")
    ap.add_argument("--train-images", type=int, default=2000)
    ap.add_argument("--train-model", default="fgnet_s")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = ap.parse_args()

    tmp_dir = tempfile.TemporaryDirectory(prefix="fg-scale-")
    tmp = Path(tmp_dir.name)
    folder = Path(args.dir) if args.dir else tmp / "photos"
    make_folder(folder, args.photos)
    load = round(os.getloadavg()[0], 2)  # another job on the cores skews every figure
    rows = [time_local(folder, args.model, args.batch_size)]
    for workers in (1, 2):
        rows.append(time_ray(folder, workers, args.model, args.batch_size, tmp))
    base = rows[1]["images_per_s"]
    head = ("engine", "workers", "images", "seconds", "images/s", "steady/s", "vs ray x1")
    print("{:<8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9}".format(*head))
    for r in rows:
        print(f"{r['engine']:<8} {r['workers']:>7} {r['images']:>7} {r['seconds']:>8.1f} "
              f"{r['images_per_s']:>9.1f} {r['steady_per_s']:>9.1f} "
              f"{r['images_per_s'] / base:>8.2f}x")  # fmt: skip
    for r in rows[1:]:
        print(f"ray x{r['workers']}: embedded cluster started in {r['cluster_start_s']:.1f} s")
    speedup = rows[2]["images_per_s"] / base
    result = {
        "photos": args.photos,
        "machine": machine(
            threads={"local_classifier": classifier_threads(), "ray_threads_per_worker": 1}
        ),
        "load_average_at_start": load,
        "predict": rows,
        "ray_speedup_2_vs_1": round(speedup, 3),
        "ray_speedup_2_vs_1_steady": (
            round(rows[2]["steady_per_s"] / rows[1]["steady_per_s"], 3)
            if rows[1]["steady_per_s"]
            else None
        ),
        "bar": ">= 1.6x images/s with 2 single-threaded workers",
        "meets_bar": speedup >= 1.6,
    }
    if args.train:
        from facegender.synthetic import write_utkface_folder

        data = write_utkface_folder(tmp / "faces", n=args.train_images, seed=0)
        train = [time_train(p, data, tmp, args.train_model, args.train_images) for p in (1, 2)]
        for t in train:
            print(f"torchrun x{t['processes']}: 1 epoch of {t['train_images']} images in "
                  f"{t['epoch_seconds']:.1f} s ({t['train_images_per_s']:.0f} images/s), "
                  f"val acc {t['val_acc']:.3f}")  # fmt: skip
        result["train"] = train
        result["train_speedup_2_vs_1"] = round(
            train[1]["train_images_per_s"] / train[0]["train_images_per_s"], 3
        )
    write_json(Path(args.json), result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
