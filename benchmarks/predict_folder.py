"""Photos per second and peak memory of ``facegender predict`` on a folder of generated photos.

Generates ``--n`` 640 x 480 JPEGs (1-3 faces each, cut from the public-domain example photos,
pasted at random scales onto generated backgrounds; no data set needed), then runs the real CLI
on the folder with ``--format jsonl --out`` as a subprocess while sampling the resident memory of
it and its worker processes. Memory must stay flat as the folder grows: the JSON result has the
peak RSS and the RSS after the first and the last 10 % of the run.

    python benchmarks/predict_folder.py --n 10000 --model runs/x
    python benchmarks/predict_folder.py --n 500 --model runs/x      # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import describe, machine
from _photos import compose
from PIL import Image

from facegender.checkpoint import write_json

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "examples" / "photos"


def face_crops() -> list[Image.Image]:
    """Faces cut from the example photos (boxes found once with the detector, then fixed)."""
    astro = Image.open(PHOTOS / "astronaut.jpg").convert("RGB")
    pair = Image.open(PHOTOS / "two_people.jpg").convert("RGB")
    crops = [astro.crop((160, 40, 290, 190)), pair.crop((512, 75, 590, 160))]
    return crops + [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have >= n:
        return
    rng = np.random.default_rng(seed + have)
    faces = face_crops()
    for i in range(have, n):
        chosen = [faces[j] for j in rng.integers(0, len(faces), int(rng.integers(1, 4)))]
        img, _ = compose(chosen, rng, sides=(50, 160))
        img.save(folder / f"photo_{i:06d}.jpg", quality=85)
        if (i + 1) % 1000 == 0:
            print(f"generated {i + 1}/{n}", file=sys.stderr)


def tree_rss(proc) -> tuple[int, int]:
    """(RSS of the process, RSS of it plus all its descendants) in bytes."""
    import psutil

    try:
        main = proc.memory_info().rss
        kids = sum(c.memory_info().rss for c in proc.children(recursive=True))
        return main, main + kids
    except psutil.Error:
        return 0, 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--workers", default=None, help="passed to --workers (default: CLI's own)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dir", default=None, help="photo folder to (re)use (default: a temp dir)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "predict_folder.json"))
    args = ap.parse_args()
    import psutil

    tmp = tempfile.TemporaryDirectory(prefix="fg-folder-")
    folder = Path(args.dir) if args.dir else Path(tmp.name) / "photos"
    t0 = time.perf_counter()
    make_folder(folder, args.n)
    gen_s = time.perf_counter() - t0
    out = Path(tmp.name) / "results.jsonl"
    cmd = [sys.executable, "-m", "facegender", "predict", str(folder), "--format", "jsonl",
           "--out", str(out), "--no-progress", "--batch-size", str(args.batch_size)]  # fmt: skip
    if args.model:
        cmd += ["--model", args.model]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    samples = []  # (seconds, main rss, tree rss)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        samples.append((time.perf_counter() - t0, *tree_rss(ps)))
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        print(stderr, file=sys.stderr)
        return proc.returncode
    statuses: dict[str, int] = {}
    faces = 0
    with out.open() as f:
        for line in f:
            d = json.loads(line)
            statuses[d["status"]] = statuses.get(d["status"], 0) + 1
            faces += len(d["faces"])
    n = sum(statuses.values())
    from facegender.cpu import DETECTOR_THREADS, classifier_threads
    from facegender.predict import default_workers

    workers = args.workers or default_workers()
    mach = machine(
        threads={
            "workers": workers,
            "classifier": classifier_threads(workers),
            "detector_per_worker": DETECTOR_THREADS,
        }
    )
    print(describe(mach))
    t = np.array([s[0] for s in samples])
    tree = np.array([s[2] for s in samples], dtype=float) / 2**20
    main_rss = np.array([s[1] for s in samples], dtype=float) / 2**20
    early, late = t <= 0.1 * wall + 2.0, t >= 0.9 * wall
    result = {
        "photos": n,
        "faces": faces,
        "statuses": statuses,
        "photos_per_s": round(n / wall, 1),
        "wall_s": round(wall, 1),
        "workers": args.workers or "default",
        "machine": mach,
        "peak_rss_mib_all_processes": round(float(tree.max()), 1),
        "peak_rss_mib_main_process": round(float(main_rss.max()), 1),
        "rss_mib_first_10pct": round(float(tree[early].max()), 1) if early.any() else None,
        "rss_mib_last_10pct": round(float(tree[late].max()), 1) if late.any() else None,
        "generate_s": round(gen_s, 1),
        "summary_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
