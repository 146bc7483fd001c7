"""Copy a trained run into the package as the bundled model: ``python -m facegender.bundle RUN``.

The bundled ``model.onnx`` (what ``default`` and its alias ``fast`` run) is the run's weights
without flip TTA, quantised to int8 (static QDQ, per-channel 7-bit weights, calibrated on 512
training images), with a temperature refitted on the validation split. Chosen by measurement
(``benchmarks/throughput.py``, ``benchmarks/bundled_model.py``): int8 matched float32 on the
held-out split at 2.5-5x the faces/s. ``model.accurate.onnx`` (``--model accurate``) is the
same int8 weights with flip TTA inside the graph and its own temperature: on the three-source
model it earned its place on pre-cut crops (+0.9 points on FairFace, paired; MODEL_CARD.md)
at half the faces/s, so the default stays the fast graph. ``model.safetensors`` (float16, the
same weights) stays beside them for the PyTorch backend (``--backend torch``: float32
arithmetic, no TTA), which explanations and re-exports need. The accurate graph can also be
another run's model (``--accurate-from RUN``) or an ensemble (``--partner RUN``); every model in
it must have been trained with the bundle's validation split, which fits their temperatures.
The accuracy of the run and of each bundled backend on the validation split is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from facegender.checkpoint import (
    ACCURATE_ONNX_FILE,
    CONFIG_FILE,
    FAST_ONNX_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    write_json,
)
from facegender.model_ref import bundled_model_dir

EXTRAS = ("curves.png", "history.csv", "history.json")


def bundle(
    run: Path,
    dest: Path | None = None,
    partners: tuple[Path, ...] = (),
    accurate_from: Path | None = None,
) -> Path:
    """``run`` into ``dest`` (default: the package's weights/default), both graphs written and
    checked; ``partners`` and ``accurate_from`` shape the accurate graph only
    (:func:`write_graph`)."""
    from facegender.train import face_crop_views

    dest = dest or bundled_model_dir()
    config = _finished(run)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / FAST_ONNX_FILE).unlink(missing_ok=True)  # an older bundle's second graph
    state, half = _write_half_weights(run, dest)
    config["model"].setdefault("kwargs", {})["tta_flip"] = False
    config["bundled"] = {
        "from_run": run.name,
        "weights_dtype": "float16",
        "graph": graph_name(False),
    }
    write_json(dest / CONFIG_FILE, config)
    members = _members(dest, partners, accurate_from)  # refused before the long part
    for name in EXTRAS:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    drift = max(
        float((state[k].float() - half[k].float()).abs().max())
        for k in half
        if half[k].is_floating_point()
    )
    print(f"bundled {run} -> {dest} (max weight change from float16: {drift:.2e})")
    views = face_crop_views(config["train_args"].get("face_crop", "own"))
    data = [_validation_data(config, view) for view in views]
    arrays, labels, tr_idx, va_idx, ages = data[0]
    _refit_age_scales(dest, [d[0][d[3]] for d in data], labels[va_idx], ages[va_idx])
    _write_graphs(dest, data, (False, True), members)
    _compare_on_validation(run, dest, arrays[va_idx], labels[va_idx])
    for f in sorted(dest.iterdir()):
        print(f"  {f.name:20s} {f.stat().st_size / 1e6:6.2f} MB")
    return dest


def _finished(run: Path) -> dict:
    """``run``'s config; a clear exit where it is missing or the run has not finished."""
    try:
        config = json.loads((run / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{run} is not a training run ({e})") from None
    if config.get("status") != "final":
        raise SystemExit(f"{run} is not a finished run (status {config.get('status')!r})")
    return config


def _write_half_weights(run: Path, dest: Path):
    """Conv/linear weights to float16; small buffers (BN statistics, normalisation) stay float32."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / WEIGHTS_FILE))
    half = {
        k: v.half() if v.is_floating_point() and v.numel() > 1024 else v for k, v in state.items()
    }
    save_file(half, str(dest / WEIGHTS_FILE), metadata={"format": "pt", "dtype": "float16"})
    return state, half


def _refit_age_scales(dest: Path, val_views: list, val_labels, val_ages) -> None:
    """A model with an age head: refit its age classes' scales for the bundled weights without
    flip TTA (the run fitted them with it), in ``dest``'s weights and config."""
    from safetensors.torch import load_file, save_file

    from facegender.age_calibration import fit_age_calibration
    from facegender.checkpoint import load_model
    from facegender.classifier import TorchClassifier

    model = load_model(dest)
    fitted = fit_age_calibration(
        TorchClassifier(model, model.config), val_views, val_labels, val_ages
    )
    if not fitted:
        return
    state = load_file(str(dest / WEIGHTS_FILE))
    state["age_scale"] = model.age_scale.detach().clone()
    save_file(state, str(dest / WEIGHTS_FILE), metadata={"format": "pt", "dtype": "float16"})
    config = json.loads((dest / CONFIG_FILE).read_text())
    config["calibration"] = {**config.get("calibration", {}), **fitted}
    write_json(dest / CONFIG_FILE, config)
    print(f"age scales refitted without flip TTA: {fitted['age_scales']}")


def _validation_data(config: dict, face_crop: str = "own"):
    """One crop of the run's decoded images, labels, (train, validation) indices and age
    classes (-1 unknown)."""
    import numpy as np

    from facegender.labels import age_class
    from facegender.train import TrainConfig, prepare_data

    cfg = TrainConfig.from_dict(config["train_args"])
    cfg.progress = False
    arrays, ds, tr_idx, va_idx = prepare_data(
        cfg, log=lambda m: None, report=False, face_crop=face_crop
    )
    labels = np.array([s.label for s in ds.samples])
    ages = np.array([age_class(s) for s in ds.samples])
    return arrays, labels, np.asarray(tr_idx), np.asarray(va_idx), ages


def _sample(idx, n: int, seed: int = 0):
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(idx)[:n])


def add_accurate_graph(
    dest: Path, partners: tuple[Path, ...] = (), accurate_from: Path | None = None
) -> Path:
    """Write ``model.accurate.onnx`` into an existing bundle, leaving its weights, its default
    graph and ``config.json`` as they are (a bundle made before the accurate graph existed, or
    an accurate graph that gains ``partners`` or is another run's model)."""
    from facegender.train import face_crop_views

    config = json.loads((dest / CONFIG_FILE).read_text())
    views = face_crop_views(config["train_args"].get("face_crop", "own"))
    members = _members(dest, partners, accurate_from)
    data = [_validation_data(config, v) for v in views]
    return _write_graphs(dest, data, (True,), members)


def _members(dest: Path, partners: tuple, accurate_from: Path | None) -> tuple[Path, ...]:
    """The folders whose models make the accurate graph: ``accurate_from`` (else the bundle's
    own model) and the ``partners``. Refused unless every one was trained with the bundle's
    validation split: their temperatures are fitted on it, and it must be unseen by all."""
    members = (accurate_from or dest, *partners)
    base = json.loads((dest / CONFIG_FILE).read_text())["train_args"]
    for m in members:
        args = json.loads((m / CONFIG_FILE).read_text())["train_args"]
        if _split_key(args) != _split_key(base):
            raise SystemExit(
                f"{m} was trained with another validation split than {dest} (data, val, "
                f"val_split or its seed differ): retrain it with --split-seed {_split_key(base)[3]}"
            )
    return members


def _split_key(train_args: dict) -> tuple:
    from facegender.train import TrainConfig

    cfg = TrainConfig.from_dict(train_args)
    return tuple(cfg.data), tuple(cfg.val or ()), cfg.val_split, cfg.val_seed


def _write_graphs(dest: Path, data: list, flips: tuple[bool, ...], members: tuple = ()) -> Path:
    """The int8 graphs for ``flips``, calibrated on 512 training images of the first view and
    temperature-fitted on the validation split of every view (``_validation_data`` each);
    ``members`` make the flip-TTA graph only (``--model accurate``)."""
    arrays, labels, tr_idx, va_idx, _ = data[0]
    calib, val_views = arrays[_sample(tr_idx, 512)], [d[0][d[3]] for d in data]
    return [
        write_graph(dest, calib, val_views, labels[va_idx], f, members if f else ()) for f in flips
    ][-1]


def write_graph(
    dest: Path, calib, val_views: list, val_labels, tta_flip: bool, members: tuple = ()
) -> Path:
    """One int8 graph: ``model.onnx`` of ``dest``'s weights without flip TTA (its calibration
    also in ``config.json``), or ``model.accurate.onnx`` with it, whose calibration lives only
    in its own metadata (a second graph in a folder is read by its metadata; runtime.py).
    ``members`` (folders with weights and config; default ``dest`` alone): the graph is the
    first one's model, or, with more, the ensemble of theirs (:func:`_float_graph`)."""
    import numpy as np

    from facegender.metrics import expected_calibration_error, fit_temperature
    from facegender.preprocess import probability
    from facegender.quantize import quantize_int8
    from facegender.runtime import OnnxClassifier

    first, *partners = members or (dest,)
    config = _graph_config(first, tta_flip, 1 + len(partners))
    name = config["bundled"]["graph"]
    with tempfile.TemporaryDirectory(prefix="fg-bundle-") as tmp:
        work = Path(tmp)
        write_json(work / CONFIG_FILE, config)  # the weights with this graph's flip TTA
        shutil.copy2(first / WEIGHTS_FILE, work / WEIGHTS_FILE)
        fp32 = _float_graph(work, config, tuple(partners), val_views, val_labels)
        out = quantize_int8(fp32, arrays=calib, out=work / "model.int8.onnx")
        logits = [OnnxClassifier.load(out).logits(v) for v in val_views]
        t = fit_temperature(np.concatenate(logits), np.tile(val_labels, len(val_views)))
        p_raw, p_cal = probability(logits[0], 1.0), probability(logits[0], t)
        config["calibration"] = {
            **config.get("calibration", {}),  # the age classes' scales, where there are some
            "temperature": t,
            "ece_before": expected_calibration_error(val_labels, p_raw),
            "ece_after": expected_calibration_error(val_labels, p_cal),
            "fitted_on": "validation split",
            "graph": name,
        }
        if not tta_flip:
            write_json(dest / CONFIG_FILE, config)
        target = dest / (ACCURATE_ONNX_FILE if tta_flip else ONNX_FILE)
        _save_with_config(out, config, target)
    cal = config["calibration"]
    print(
        f"{target.name} ({name}): T={t:.3f}, "
        f"ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} on the validation split"
    )
    return target


def _graph_config(first: Path, tta_flip: bool, n_members: int) -> dict:
    """The config a graph carries: ``first``'s (the bundle's own, or another run's for the
    accurate graph), with this graph's flip TTA and name."""
    config = json.loads((first / CONFIG_FILE).read_text())
    config["model"].setdefault("kwargs", {})["tta_flip"] = tta_flip
    bundled = config.setdefault("bundled", {"from_run": first.name})
    bundled["graph"] = graph_name(tta_flip, n_members)
    return config


def graph_name(tta_flip: bool, members: int = 1) -> str:
    name = f"int8, 7-bit per-channel weights, {'with' if tta_flip else 'no'} flip TTA"
    return name if members == 1 else f"{name}, mean of {members} models"


def _float_graph(work: Path, config: dict, partners: tuple, val_views: list, val_labels) -> Path:
    """The float32 graph of ``work``'s model, or, with ``partners``, of the
    :class:`~facegender.models.ensemble.Ensemble` of it and the partner runs' models (each with
    ``work``'s flip TTA and its own temperature, fitted here on the validation views as it
    runs in the graph). The members and their recipes are recorded in ``config``."""
    import numpy as np

    from facegender.checkpoint import load_model
    from facegender.classifier import TorchClassifier
    from facegender.export import export_module, export_onnx
    from facegender.metrics import fit_temperature
    from facegender.models.ensemble import Ensemble, same_input
    from facegender.runtime import file_sha256

    if not partners:
        return export_onnx(work, out=work / ONNX_FILE)
    members = [load_model(work), *(load_model(p) for p in partners)]
    same_input([m.config for m in members])
    temperatures = []
    for m in members:
        m.tta_flip = config["model"]["kwargs"]["tta_flip"]
        z = [TorchClassifier(m, m.config).logits(v) for v in val_views]
        temperatures.append(fit_temperature(np.concatenate(z), np.tile(val_labels, len(z))))
    config["ensemble"] = {
        "members": [config.get("bundled", {}).get("from_run", work.name)]
        + [Path(p).name for p in partners],
        "temperatures": temperatures,
        "partners": [
            {k: m.config.get(k) for k in ("model", "train_args", "calibration")}
            for m in members[1:]
        ],
    }
    print(f"ensemble of {len(members)}: temperatures {[round(t, 3) for t in temperatures]}")
    sha = file_sha256(work / WEIGHTS_FILE)
    return export_module(Ensemble(members, temperatures), config, work / ONNX_FILE, sha)


def _save_with_config(graph_file: Path, config: dict, target: Path) -> None:
    """``graph_file`` saved as ``target``, with ``config`` and its weights' hash as metadata."""
    import onnx

    from facegender.export import metadata, set_metadata
    from facegender.runtime import WEIGHTS_HASH_KEY

    graph = onnx.load(str(graph_file))
    sha = {p.key: p.value for p in graph.metadata_props}.get(WEIGHTS_HASH_KEY)
    set_metadata(graph, metadata(config, sha))
    onnx.save(graph, str(target))


def _compare_on_validation(run: Path, dest: Path, arrays, y) -> None:
    """Accuracy of the run (float32, its TTA) and the bundled backends on the validation split."""
    from facegender.classifier import load_classifier

    for name, path, backend in (
        ("run", run, "torch"),
        ("bundled", dest, "torch"),
        ("bundled", dest, "onnx"),
    ):
        p = load_classifier(path, backend=backend).probabilities(arrays)
        print(f"  validation accuracy {name:8s} {backend:6s} {float(((p >= 0.5) == y).mean()):.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path, help="finished training run folder (train --out)")
    ap.add_argument(
        "--dest", type=Path, default=None, help="default: the package's weights/default"
    )
    ap.add_argument(
        "--add-accurate",
        action="store_true",
        help="RUN is an existing bundle: only add its model.accurate.onnx (flip TTA inside)",
    )
    ap.add_argument(
        "--partner",
        type=Path,
        action="append",
        default=[],
        help="a finished run whose model joins the accurate graph (the mean of the models' "
        "calibrated logits); repeat for more",
    )
    ap.add_argument(
        "--accurate-from",
        type=Path,
        default=None,
        help="a finished run whose model (flip TTA inside) makes the accurate graph instead of "
        "RUN's own: a wider model than the default graph can afford",
    )
    args = ap.parse_args(argv)
    partners = tuple(args.partner)
    for p in (*partners, *([args.accurate_from] if args.accurate_from else [])):
        _finished(p)
    if args.add_accurate:
        add_accurate_graph(args.run, partners, args.accurate_from)
    else:
        bundle(args.run, args.dest, partners, args.accurate_from)
    return 0


if __name__ == "__main__":
    sys.exit(main())
