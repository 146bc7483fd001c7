"""Detection and one 640 x 480 photo end to end when the cores are shared: idle, pinned, busy.

    python benchmarks/cpu_share.py [--model DIR] [--seconds 4]

Each thread setting runs in a fresh child process (OpenMP reads its environment once, when the
runtime starts), under each condition:

  free    the child may use every core, nothing else started by this benchmark;
  pinned  the child pinned to one core (``os.sched_setaffinity``);
  busy    a CPU-burning process pinned to the last core, the child not pinned (a service or
          batch job beside other work: the case the issue measured 10-20x slow-downs in);
  busy2   two burning processes, the child not pinned.

Settings (detector backend and threads):
``old`` (libfacedetection's own code from ``yuface``, ``yunet-lib``, with OpenMP's default of
every core, and onnxruntime's default pool, spinning: facegender before issue 16), ``passive``
(the same with ``OMP_WAIT_POLICY=passive``), ``lib`` (``yunet-lib`` on one OpenMP thread, the
classifier's threads from the worker count, no spinning: the default until the detector moved
onto onnxruntime), ``new`` (today's default, :mod:`facegender.cpu`: the shipped YuNet graph on
one onnxruntime thread, the rest as ``lib``) and ``new+spin`` (the same with the classifier's
pool spinning). Each child times a YuNet
detection of a 200 x 200 face crop, a detection of the 640 x 480 photo, ``Predictor().predict``
of the photo's JPEG bytes (decode, detect, align, classify; two faces) and the reference
workload of ``_machine.py``, and reports medians. Ratios (busy / free, pinned / free, and each
setting / ``old``) are printed and written with everything else to
``benchmarks/results/cpu_share.json``. A machine that is busy with other work already makes
``free`` a shared condition too: compare ratios from one run, and read the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facegender.cpu import DETECTOR_THREADS, classifier_threads

HERE = Path(__file__).resolve().parent
# detector_threads 0: OpenMP's default team; threads 0: onnxruntime's default pool, None: the rule
_LIB, _GRAPH = {"detector": "yunet-lib"}, {"detector": "yunet"}
_RULE = {"detector_threads": DETECTOR_THREADS, "threads": None}
SETTINGS = {
    "old": {"env": {}, **_LIB, "detector_threads": 0, "threads": 0, "spin": True},
    "passive": {
        "env": {"OMP_WAIT_POLICY": "passive"},
        **_LIB,
        "detector_threads": 0,
        "threads": 0,
        "spin": True,
    },
    "lib": {"env": {}, **_LIB, **_RULE, "spin": False},
    "new": {"env": {}, **_GRAPH, **_RULE, "spin": False},
    "new+spin": {"env": {}, **_GRAPH, **_RULE, "spin": True},
}
CONDITIONS = ("free", "pinned", "busy", "busy2")


def photo_jpeg() -> tuple[bytes, np.ndarray]:
    """A fixed 640 x 480 photo with two faces (cut from the example photos) and a face crop."""
    from _photos import compose
    from predict_folder import face_crops

    crops = face_crops()
    img, boxes = compose(crops[:2], np.random.default_rng(3), sides=(110, 160))
    assert len(boxes) == 2, "could not place both faces"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    face = np.asarray(crops[0].resize((200, 200)))
    return buf.getvalue(), np.ascontiguousarray(face)


def _median_ms(fn, seconds: float, least: int = 15) -> float:
    for _ in range(3):
        fn()
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < least:
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 2)


def _classifier(model: str | None, threads: int, spin: bool):
    """The classifier with onnxruntime's pool spinning (its default before issue 16) or not."""
    import onnxruntime as ort

    from facegender.classifier import load_classifier
    from facegender.runtime import OnnxClassifier, session_options

    ref = load_classifier(model, backend="onnx")
    sess = ort.InferenceSession(
        str(ref.path), session_options(threads, spin=spin), providers=["CPUExecutionProvider"]
    )
    return OnnxClassifier(sess, ref.config, ref.path)


def child(setting: str, model: str | None, seconds: float) -> dict:
    """Runs in the child process: time everything under this process's conditions."""
    from _machine import reference_ms

    from facegender.detect import get_detector
    from facegender.predict import Predictor
    from facegender.preprocess import open_image

    s = SETTINGS[setting]
    threads = classifier_threads() if s["threads"] is None else s["threads"]
    pred = Predictor(
        classifier=_classifier(model, threads, s["spin"]),
        detector=s["detector"],
        detector_threads=s["detector_threads"],
    )
    det = get_detector(s["detector"], threads=s["detector_threads"])
    data, face = photo_jpeg()
    frame = np.asarray(open_image(data))
    faces = len(pred.predict(data).faces)
    return {
        "faces_found": faces,
        "detect_200px_ms": _median_ms(lambda: det.detect(face), seconds),
        "detect_640x480_ms": _median_ms(lambda: det.detect(frame), seconds),
        "photo_end_to_end_ms": _median_ms(lambda: pred.predict(data), seconds),
        "reference_ms": reference_ms(repeats=15)["ms"],
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def burners(n: int) -> list[subprocess.Popen]:
    """``n`` processes that burn a core each, pinned to the last cores."""
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for i in range(n):
        p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(p.pid, {cores[-1 - i % len(cores)]})
        procs.append(p)
    time.sleep(0.5)
    return procs


def run_child(setting: str, condition: str, args) -> dict:
    env = {**os.environ, **SETTINGS[setting]["env"]}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__)), "--child", setting, "--seconds", str(args.seconds)]
    if args.model:
        cmd += ["--model", args.model]
    core = sorted(os.sched_getaffinity(0))[0]
    pin = (lambda: os.sched_setaffinity(0, {core})) if condition == "pinned" else None
    hot = burners({"busy": 1, "busy2": 2}.get(condition, 0))
    try:
        out = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=600, preexec_fn=pin
        )
    finally:
        for p in hot:
            p.kill()
            p.wait()
    if out.returncode != 0:
        raise SystemExit(f"{setting}/{condition} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_cell(rs: list[dict]) -> dict:
    keys = ("detect_200px_ms", "detect_640x480_ms", "photo_end_to_end_ms", "reference_ms")
    return {k: round(statistics.median(r[k] for r in rs), 2) for k in keys} | {
        "faces_found": rs[0]["faces_found"],
        "affinity": rs[0]["affinity"],
    }


def ratios(cells: dict) -> dict:
    keys = ("detect_200px_ms", "detect_640x480_ms", "photo_end_to_end_ms", "reference_ms")
    out = {}
    for setting, by_cond in cells.items():
        free = by_cond["free"]
        out[setting] = {
            f"{cond}/free": {k: round(by_cond[cond][k] / free[k], 2) for k in keys}
            for cond in by_cond
            if cond != "free"
        }
        if setting != "old":
            out[setting]["vs_old"] = {
                cond: {k: round(by_cond[cond][k] / cells["old"][cond][k], 2) for k in keys[:3]}
                for cond in by_cond
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=4.0, help="timing per figure and cell")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--rounds", type=int, default=3, help="repeats of the whole grid")
    ap.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    ap.add_argument("--json", default=str(HERE / "results" / "cpu_share.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.seconds)))
        return 0
    if "free" not in args.conditions:
        ap.error("--conditions needs free (the ratios are to it)")
    from _machine import describe, machine

    from facegender.checkpoint import write_json

    start = machine(threads={s: {k: v for k, v in c.items() if k != "env"}
                             for s, c in SETTINGS.items()})  # fmt: skip
    print(describe(start), flush=True)
    runs: dict = {}
    # Rounds, and every setting in turn within a condition: a change in the machine's load
    # then hits all settings alike; each cell is the median over the rounds.
    for rnd in range(args.rounds):
        for cond in args.conditions:
            for setting in args.settings:
                r = run_child(setting, cond, args)
                runs.setdefault(setting, {}).setdefault(cond, []).append(r)
                print(
                    f"round {rnd + 1} {setting:<8} {cond:<7} detect 200px "
                    f"{r['detect_200px_ms']:>7.2f} ms  640x480 {r['detect_640x480_ms']:>7.2f} ms  "
                    f"photo end to end {r['photo_end_to_end_ms']:>7.2f} ms  "
                    f"reference {r['reference_ms']:>6.2f} ms",
                    flush=True,
                )
    cells = {
        setting: {cond: _median_cell(rs) for cond, rs in by_cond.items()}
        for setting, by_cond in runs.items()
    }
    for setting, by_cond in cells.items():
        for cond, r in by_cond.items():
            print(
                f"median   {setting:<8} {cond:<7} detect 200px {r['detect_200px_ms']:>7.2f} ms  "
                f"640x480 {r['detect_640x480_ms']:>7.2f} ms  photo end to end "
                f"{r['photo_end_to_end_ms']:>7.2f} ms  reference {r['reference_ms']:>6.2f} ms"
            )
    result = {
        "command": "python benchmarks/cpu_share.py " + " ".join(sys.argv[1:]),
        "machine": start,
        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
        "rounds": args.rounds,
        "cells_ms": cells,
        "runs": runs,
        "ratios": ratios(cells),
    }
    for setting, rs in result["ratios"].items():
        for key, r in rs.items():
            print(f"{setting:<8} {key:<12} {json.dumps(r)}")
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
