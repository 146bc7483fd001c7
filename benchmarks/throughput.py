"""Classifier throughput (PyTorch vs onnxruntime, fp32 and int8), CLI cold start, RSS over a loop.

    python benchmarks/throughput.py [--model DIR] [--data FOLDER ...] [--out JSON]

Throughput is the classifier alone (``clf.logits`` on ``uint8`` face arrays, so ``to_batch`` is
included, decoding is not) at batch 1 and 64 with 1 and 2 intra-op threads. Besides wall-clock
faces/s it reports faces per CPU-second of the process, which stays meaningful when another job
competes for the cores. Cold start is the wall time of ``facegender predict IMG --no-detect`` in a
fresh process (median of several). RSS is measured in a child process that predicts single
images (decode + preprocess + onnxruntime) in a loop. Bars: >= 2,000 faces/s at batch 64 on 2
cores, cold start < 1.5 s, RSS growth < 20 MB over 10,000 predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _machine import describe, machine

from facegender.checkpoint import write_json

HERE = Path(__file__).resolve().parent
BARS = {"faces_per_s_b64_2threads": 2000, "cold_start_s": 1.5, "rss_growth_mb": 20}


def untrained_checkpoint(root: Path) -> Path:
    """fgnet_m at 64 px with flip TTA, random weights: the bundled model's compute, for when it
    is not there yet."""
    import torch

    from facegender.checkpoint import make_config, save_checkpoint
    from facegender.models import create_model
    from facegender.preprocess import PreprocessConfig

    torch.manual_seed(0)
    pre = PreprocessConfig(image_size=64)
    model = create_model(
        "fgnet_m", in_chans=3, mean=list(pre.mean), std=list(pre.std), tta_flip=True
    )
    return save_checkpoint(root / "fgnet_m_untrained", model, make_config(model, pre))


def load(kind: str, model: Path, threads: int):
    from facegender.classifier import load_classifier

    if kind == "shipped":  # the source folder's own model.onnx, as shipped (bundled: int8)
        return load_classifier(model.with_name("shipped"), threads=threads)
    if kind == "int8":
        return load_classifier(model / "model.int8.onnx", threads=threads)
    if kind == "onnx-notta":
        return load_classifier(model.with_name("notta"), backend="onnx", threads=threads)
    if kind == "int8-notta":
        return load_classifier(model.with_name("notta") / "model.int8.onnx", threads=threads)
    return load_classifier(model, backend=kind, threads=threads)


def without_tta(model: Path) -> Path:
    """A copy of the checkpoint with flip TTA off, exported: what TTA costs in throughput."""
    from facegender.checkpoint import CONFIG_FILE
    from facegender.export import export_onnx

    dst = model.with_name("notta")
    shutil.copytree(model, dst, ignore=shutil.ignore_patterns("*.onnx"))
    config = json.loads((dst / CONFIG_FILE).read_text())
    config["model"].setdefault("kwargs", {})["tta_flip"] = False
    write_json(dst / CONFIG_FILE, config)
    export_onnx(dst)
    return dst


def macs_per_face(model: Path) -> float:
    """Multiply-accumulates per face (two passes with flip TTA), counted with forward hooks."""
    import torch

    from facegender.checkpoint import load_model

    net = load_model(model)
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * mod.in_channels // mod.groups * k
        elif isinstance(mod, torch.nn.Linear):
            total += out.numel() * mod.in_features

    for m in net.modules():
        m.register_forward_hook(hook)
    pre = net.config["preprocess"]
    c = 1 if pre.get("grayscale") else 3
    with torch.no_grad():
        net(torch.rand(1, c, pre["image_size"], pre["image_size"]))
    return float(total)


def throughput(clf, kind: str, threads: int, batch: int, size: int, seconds: float) -> dict:
    """Faces/s of ``clf.logits`` on random face arrays, over at least ``seconds``."""
    if kind == "torch":
        import torch

        torch.set_num_threads(threads)
    c = clf.preprocess.channels
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, c), dtype=np.uint8)
    for _ in range(3):
        clf.logits(x, batch_size=batch)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n < 5 * batch:
        clf.logits(x, batch_size=batch)
        n += batch
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "backend": kind,
        "threads": threads,
        "batch": batch,
        "faces": n,
        "faces_per_s": n / wall,
        "faces_per_cpu_s": n / cpu if cpu > 0 else None,
        "ms_per_batch": 1000 * wall / (n / batch),
    }


def predictor_rate(model, tmp: Path, seconds: float, threads: int = 2, per_call: int = 64) -> dict:
    """Faces/s through ``Predictor(detect=False).predict_batch`` on JPEG face crops: decoding and
    preprocessing included, what a user classifying a folder of crops gets. ``per_call`` images
    go into each call: 64 is one classifier batch, cut and then classified; a longer list (a
    folder) lets the next batch be cut while the classifier works on this one."""
    from facegender.predict import Predictor
    from facegender.synthetic import synthetic_face

    pred = Predictor(model, detect=False, threads=threads)
    rng = np.random.default_rng(1)

    faces = []
    for i in range(64):
        path = tmp / f"crop{i}.jpg"
        synthetic_face(i % 2, rng, size=96).save(path, quality=92)
        faces.append(path.read_bytes())
    batch = (faces * (per_call // 64 + 1))[:per_call]
    pred.predict_batch(faces)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(pred.predict_batch(batch))
    rate = n / (time.perf_counter() - t0)
    print(f"Predictor(detect=False).predict_batch, 96 px JPEG crops, {per_call} per call, "
          f"{threads} threads: {rate:.0f} faces/s", flush=True)  # fmt: skip
    return {"threads": threads, "batch": 64, "per_call": per_call, "crop_px": 96, "faces": n,
            "faces_per_s": rate}  # fmt: skip


def predictor_only(args) -> dict:
    """The issue-16 bar alone: the default classifier through the predictor, decoding included."""
    tmp = Path(tempfile.mkdtemp(prefix="fg-predictor-"))
    try:
        mach = machine(threads={"classifier": [1, 2], "detector": "off"})
        print(describe(mach), flush=True)
        rows = [
            predictor_rate(args.model, tmp, args.seconds, threads=t, per_call=k)
            for k in (64, 1024)
            for t in (1, 2)
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"model": args.model or "bundled", "predictor_detect_false": rows, "machine": mach}
    result["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def accuracy(model: Path, data: list[str]) -> dict:
    """fp32 vs int8 ONNX on labelled data: accuracy, agreement, probability difference."""
    from facegender.evaluate import evaluate

    out = {}
    probs = {}
    kinds = ["onnx", "int8"]
    if (model.with_name("notta") / "model.int8.onnx").is_file():
        kinds += ["onnx-notta", "int8-notta"]
    if (model.with_name("shipped") / "model.onnx").is_file():
        kinds.append("shipped")
    for kind in kinds:
        r = evaluate(data, classifier=load(kind, model, threads=2))
        out[kind] = {"n": r["n"], "accuracy": r["accuracy"], "roc_auc": r["roc_auc"]}
        probs[kind] = np.array([p["female_probability"] for p in r["predictions"]])
    a, b = probs["onnx"], probs["int8"]
    out["label_agreement"] = float(np.mean((a > 0.5) == (b > 0.5)))
    out["mean_abs_prob_diff"] = float(np.abs(a - b).mean())
    out["max_abs_prob_diff"] = float(np.abs(a - b).max())
    return out


def face_image(path: Path, size: int = 96) -> Path:
    from facegender.synthetic import synthetic_face

    synthetic_face(1, np.random.default_rng(0), size=size).save(path, quality=92)
    return path


def cold_start(model: Path, image: Path, repeats: int) -> dict:
    """Median wall time of the ``facegender`` CLI predicting one image in a fresh process."""
    exe = shutil.which("facegender", path=str(Path(sys.executable).parent)) or "facegender"
    cmd = [exe, "predict", str(image), "--no-detect", "--model", str(model), "--format", "json"]
    times = []
    for _ in range(repeats + 1):  # the first run warms the page cache and is discarded
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    times = times[1:]
    imp = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import facegender.runtime"], check=True)
        imp.append(time.perf_counter() - t0)
    return {
        "command": " ".join(cmd),
        "median_s": statistics.median(times),
        "runs_s": times,
        "import_runtime_median_s": statistics.median(imp),
    }


RSS_CHILD = textwrap.dedent(
    """
    import json, sys
    from facegender.classifier import load_classifier
    from facegender.preprocess import load_face

    def rss_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    model, image, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clf = load_classifier(model, backend="onnx", threads=1)
    data = open(image, "rb").read()
    marks = {}
    for i in range(1, total + 1):
        clf.probabilities(load_face(data, clf.preprocess))
        if i in (100, 1000, total):
            marks[i] = rss_mb()
    print(json.dumps({"torch_imported": "torch" in sys.modules, "rss_mb": marks}))
    """
)


def rss(model: Path, image: Path, total: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(model), str(image), str(total)],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(r.stdout)
    marks = {int(k): v for k, v in res["rss_mb"].items()}
    return {
        "predictions": total,
        "rss_mb_after_100": marks[100],
        "rss_mb_after_1000": marks.get(1000),
        "rss_mb_after_all": marks[total],
        "growth_mb": marks[total] - marks[100],
        "torch_imported": res["torch_imported"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="Checkpoint folder (default: the bundled model).")
    ap.add_argument("--data", nargs="*", default=[], help="Labelled folders: int8 accuracy.")
    ap.add_argument("--calib-data", nargs="*", help="int8 calibration data (default: --data).")
    ap.add_argument("--seconds", type=float, default=3.0, help="Time per throughput cell.")
    ap.add_argument("--repeats", type=int, default=5, help="Cold-start repeats.")
    ap.add_argument("--predictions", type=int, default=10_000, help="RSS loop length.")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    ap.add_argument(
        "--predictor-only",
        action="store_true",
        help="Only Predictor(detect=False).predict_batch faces/s for --model (a folder, an "
        ".onnx file or a bundled name), on 1 and 2 threads; writes --out.",
    )
    args = ap.parse_args(argv)
    if args.predictor_only:
        return predictor_only(args)

    from facegender.checkpoint import CONFIG_FILE, ONNX_FILE
    from facegender.export import export_onnx
    from facegender.model_ref import bundled_model_dir
    from facegender.quantize import quantize_int8

    tmp = Path(tempfile.mkdtemp(prefix="fg-throughput-"))
    try:
        src = Path(args.model) if args.model else bundled_model_dir()
        note = None
        if not (src / CONFIG_FILE).is_file():
            if args.model:
                raise SystemExit(f"{src} is not a checkpoint")
            src = untrained_checkpoint(tmp)
            note = "bundled model absent: untrained fgnet_m at 64 px with flip TTA (same compute)"
        model = tmp / "model"  # a scratch copy: exports never touch the source folder
        shutil.copytree(src, model, ignore=shutil.ignore_patterns("last", "*.png", "*.csv"))
        shipped = (src / ONNX_FILE).is_file()
        if shipped:  # kept as is: for the bundled model, the int8 graph that `default` runs
            shutil.copytree(model, tmp / "shipped")
        export_onnx(model)  # float32, from the weights
        user_model = tmp / "shipped" if shipped else model  # what `--model SRC` runs
        calib = args.calib_data or args.data
        kinds = ["onnx"] + ([] if args.skip_torch else ["torch"]) + (["shipped"] if shipped else [])
        config = json.loads((model / CONFIG_FILE).read_text())
        if config["model"].get("kwargs", {}).get("tta_flip"):
            without_tta(model)
            kinds.append("onnx-notta")
        if calib:
            quantize_int8(model / "model.onnx", list(calib))
            kinds.append("int8")
            if "onnx-notta" in kinds:
                quantize_int8(model.with_name("notta") / "model.onnx", list(calib))
                kinds.append("int8-notta")
        size = int(config["preprocess"]["image_size"])
        load_start = os.getloadavg()

        rows = []
        for kind in kinds:
            for threads in (1, 2):
                clf = load(kind, model, threads)
                for batch in (1, 64):
                    rows.append(throughput(clf, kind, threads, batch, size, args.seconds))
                    _print_row(rows[-1])
                del clf
        result = {
            "model": {
                "source": str(src),
                "name": config["model"]["name"],
                "image_size": size,
                "tta_flip": bool(config["model"].get("kwargs", {}).get("tta_flip", False)),
                "note": note,
                "macs_per_face": macs_per_face(model),
            },
            "machine": {
                **machine(threads={"classifier": [1, 2], "predictor_detect_false": 2}),
                "loadavg_at_start": load_start,
            },
            "throughput": rows,
            "predictor_detect_false": predictor_rate(user_model, tmp, args.seconds),
            "int8_accuracy": accuracy(model, args.data) if args.data and calib else None,
            "cold_start": cold_start(user_model, face_image(tmp / "face.jpg"), args.repeats),
            "rss": rss(user_model, tmp / "face.jpg", args.predictions),
            "bars": BARS,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    _print_summary(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def _print_row(r: dict) -> None:
    cpu = r["faces_per_cpu_s"]
    print(
        f"{r['backend']:<6} threads {r['threads']}  batch {r['batch']:>3}  "
        f"{r['faces_per_s']:>8.0f} faces/s  {cpu or float('nan'):>8.0f} faces/CPU-s  "
        f"{r['ms_per_batch']:>7.2f} ms/batch",
        flush=True,
    )


def _print_summary(res: dict) -> None:
    best = max(
        (r for r in res["throughput"] if r["batch"] == 64 and r["threads"] == 2),
        key=lambda r: r["faces_per_s"],
    )
    cs, mem = res["cold_start"], res["rss"]
    print()
    if res["model"]["note"]:
        print(f"note: {res['model']['note']}")
    print(describe(res["machine"]))
    print(f"load average {res['machine']['loadavg_at_start']} (other jobs share the cores)")
    gmac = res["model"]["macs_per_face"] / 1e9
    print(
        f"{gmac * 1e3:.1f} MMAC per face (flip TTA {res['model']['tta_flip']}): "
        f"{BARS['faces_per_s_b64_2threads']} faces/s needs "
        f"{2 * gmac * BARS['faces_per_s_b64_2threads']:.0f} GFLOP/s"
    )
    print(
        f"best batch 64 / 2 threads: {best['backend']} {best['faces_per_s']:.0f} faces/s "
        f"(bar >= {BARS['faces_per_s_b64_2threads']})"
    )
    print(
        f"cold start (predict one image, --no-detect): median {cs['median_s']:.2f} s "
        f"(bar < {BARS['cold_start_s']}); `import facegender.runtime` "
        f"{cs['import_runtime_median_s']:.2f} s"
    )
    print(
        f"RSS {mem['rss_mb_after_100']:.1f} MB after 100, {mem['rss_mb_after_all']:.1f} MB after "
        f"{mem['predictions']}: growth {mem['growth_mb']:.1f} MB (bar < {BARS['rss_growth_mb']})"
    )
    if res["int8_accuracy"]:
        a = res["int8_accuracy"]
        print(
            f"int8 vs fp32 on {a['onnx']['n']} images: accuracy {a['int8']['accuracy']:.4f} vs "
            f"{a['onnx']['accuracy']:.4f}, label agreement {a['label_agreement']:.4f}, "
            f"mean |dp| {a['mean_abs_prob_diff']:.4f}"
        )
        if "shipped" in a:
            print(f"shipped model.onnx (bundled: default): {a['shipped']['accuracy']:.4f}")
        if "int8-notta" in a:
            print(
                f"without flip TTA: fp32 {a['onnx-notta']['accuracy']:.4f}, "
                f"int8 {a['int8-notta']['accuracy']:.4f}"
            )


if __name__ == "__main__":
    main()
