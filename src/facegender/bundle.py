"""Copy a trained run into the package as the bundled model: ``python -m facegender.bundle RUN``.

The safetensors weights are stored in float16 (half the size; loading upcasts them) and the ONNX
graph is exported from exactly those rounded weights, so both backends ship the same model.
The accuracy change from rounding is measured on the run's validation split and printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from facegender.checkpoint import CONFIG_FILE, WEIGHTS_FILE, bundled_model_dir, write_json

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
    export_onnx(dest)
    with torch.no_grad():
        drift = max(
            float((state[k].float() - half[k].float()).abs().max())
            for k in half
            if half[k].is_floating_point()
        )
    print(f"bundled {run} -> {dest} (max weight change from float16: {drift:.2e})")
    _compare_on_validation(run, dest, config)
    for f in sorted(dest.iterdir()):
        print(f"  {f.name:20s} {f.stat().st_size / 1e6:6.2f} MB")
    return dest


def _compare_on_validation(run: Path, dest: Path, config: dict) -> None:
    """Accuracy of the run and the bundled (float16, ONNX) model on the run's validation split."""
    import numpy as np

    from facegender.classifier import load_classifier
    from facegender.train import TrainConfig, prepare_data

    cfg = TrainConfig.from_dict(config["train_args"])
    cfg.progress = False
    arrays, ds, _, va_idx = prepare_data(cfg, log=lambda m: None)
    y = np.array([ds.samples[i].label for i in va_idx])
    for name, path, backend in (
        ("run", run, "torch"),
        ("bundled", dest, "torch"),
        ("bundled", dest, "onnx"),
    ):
        p = load_classifier(path, backend=backend).probabilities(arrays[va_idx])
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
