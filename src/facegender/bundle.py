"""Copy a trained run into the package as the bundled model: ``python -m facegender.bundle RUN``.

The safetensors weights are stored in float16 (half the size; loading upcasts them) and the ONNX
graph is exported from exactly those rounded weights, also stored as float16 (computing in float32),
so both backends ship the same model in under half the bytes.
The accuracy change from rounding is measured on the run's validation split and printed.

Beside it ships ``model.fast.onnx`` (``--model fast``): the same weights without flip TTA,
quantised to int8 (calibrated on training images) with a temperature of its own fitted on the
validation split. About 3x the faces/s of the default for a measured accuracy cost, for users who
classify millions of crops (``benchmarks/throughput.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from facegender.checkpoint import (
    CONFIG_FILE,
    FAST_ONNX_FILE,
    WEIGHTS_FILE,
    bundled_model_dir,
    write_json,
)

EXTRAS = ("curves.png", "history.csv", "history.json")


def bundle(run: Path, dest: Path | None = None) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from facegender.export import export_onnx

    dest = dest or bundled_model_dir()
    config = json.loads((run / CONFIG_FILE).read_text())
    if config.get("status") != "final":
        raise SystemExit(f"{run} is not a finished run (status {config.get('status')!r})")
    dest.mkdir(parents=True, exist_ok=True)
    state = load_file(str(run / WEIGHTS_FILE))
    # Conv/linear weights to float16; small buffers (BN statistics, normalisation) stay float32.
    half = {
        k: v.half() if v.is_floating_point() and v.numel() > 1024 else v for k, v in state.items()
    }
    save_file(half, str(dest / WEIGHTS_FILE), metadata={"format": "pt", "dtype": "float16"})
    config["bundled"] = {"from_run": run.name, "weights_dtype": "float16"}
    write_json(dest / CONFIG_FILE, config)
    for name in EXTRAS:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    export_onnx(dest, float16_weights=True)  # lossless: the weights are float16 already
    with torch.no_grad():
        drift = max(
            float((state[k].float() - half[k].float()).abs().max())
            for k in half
            if half[k].is_floating_point()
        )
    print(f"bundled {run} -> {dest} (max weight change from float16: {drift:.2e})")
    arrays, labels, tr_idx, va_idx = _validation_data(config)
    write_fast_variant(dest, arrays[_sample(tr_idx, 512)], arrays[va_idx], labels[va_idx])
    _compare_on_validation(run, dest, arrays[va_idx], labels[va_idx])
    for f in sorted(dest.iterdir()):
        print(f"  {f.name:20s} {f.stat().st_size / 1e6:6.2f} MB")
    return dest


def _validation_data(config: dict):
    """The run's decoded images, labels and (train, validation) indices, from its args."""
    import numpy as np

    from facegender.train import TrainConfig, prepare_data

    cfg = TrainConfig.from_dict(config["train_args"])
    cfg.progress = False
    arrays, ds, tr_idx, va_idx = prepare_data(cfg, log=lambda m: None)
    labels = np.array([s.label for s in ds.samples])
    return arrays, labels, np.asarray(tr_idx), np.asarray(va_idx)


def _sample(idx, n: int, seed: int = 0):
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(idx)[:n])


def write_fast_variant(dest: Path, calib, val_arrays, val_labels) -> Path:
    """``dest/model.fast.onnx``: no flip TTA, int8, temperature refitted on the validation split."""
    import tempfile

    import onnx

    from facegender.export import export_onnx, metadata, set_metadata
    from facegender.metrics import expected_calibration_error, fit_temperature
    from facegender.preprocess import probability
    from facegender.quantize import quantize_int8
    from facegender.runtime import OnnxClassifier

    config = json.loads((dest / CONFIG_FILE).read_text())
    config["model"].setdefault("kwargs", {})["tta_flip"] = False
    with tempfile.TemporaryDirectory(prefix="fg-fast-") as tmp:
        work = Path(tmp)
        shutil.copy2(dest / WEIGHTS_FILE, work / WEIGHTS_FILE)
        write_json(work / CONFIG_FILE, config)
        export_onnx(work)
        out = quantize_int8(work / "model.onnx", arrays=calib, out=work / FAST_ONNX_FILE)
        logits = OnnxClassifier.load(out).logits(val_arrays)
        t = fit_temperature(logits, val_labels)
        config["calibration"] = {
            "temperature": t,
            "ece_before": expected_calibration_error(val_labels, probability(logits, 1.0)),
            "ece_after": expected_calibration_error(val_labels, probability(logits, t)),
            "fitted_on": "validation split",
        }
        config["bundled"] = {**config.get("bundled", {}), "variant": "fast: int8, no flip TTA"}
        graph = onnx.load(str(out))
        set_metadata(graph, metadata(config, None))
        onnx.save(graph, str(dest / FAST_ONNX_FILE))
    cal = config["calibration"]
    print(
        f"fast variant: T={t:.3f}, ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} "
        f"on the validation split"
    )
    return dest / FAST_ONNX_FILE


def _compare_on_validation(run: Path, dest: Path, arrays, y) -> None:
    """Accuracy of the run and the bundled models (float16, ONNX, fast) on the validation split."""
    from facegender.classifier import load_classifier

    for name, path, backend in (
        ("run", run, "torch"),
        ("bundled", dest, "torch"),
        ("bundled", dest, "onnx"),
        ("fast", dest / FAST_ONNX_FILE, "onnx"),
    ):
        p = load_classifier(path, backend=backend).probabilities(arrays)
        print(f"  validation accuracy {name:8s} {backend:6s} {float(((p >= 0.5) == y).mean()):.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path, help="finished training run folder (train --out)")
    ap.add_argument(
        "--dest", type=Path, default=None, help="default: the package's weights/default"
    )
    args = ap.parse_args(argv)
    bundle(args.run, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
