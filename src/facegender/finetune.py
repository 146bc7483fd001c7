"""Fine-tuning: ``train --init default|DIR`` starts from a trained checkpoint's weights.

The starting checkpoint decides what the network is: its architecture, kwargs and preprocessing
(image size, crop, grayscale) are copied into the :class:`~facegender.train.TrainConfig`, because
weights only fit the network they were trained in. Asking for a different architecture or size
explicitly is an error that says so, never a silent override in either direction.

A few thousand photos of one's own are not enough to retrain from scratch, and the full schedule
at the full learning rate would wash out what the starting model knows. So unless given
explicitly, a fine-tune runs :data:`FINETUNE_DEFAULTS`: a short schedule at a tenth of the
from-scratch learning rate, with no warm-up (the weights are already in a good basin).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from facegender.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config
from facegender.model_ref import BUNDLED, bundled_model_dir

# What a fine-tune runs unless the user says otherwise (README: "Fine-tune on your own photos").
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 5, "lr": 3e-4, "warmup_epochs": 0.0}
# TrainConfig fields that come from the starting checkpoint.
ARCH_FIELDS = ("model", "model_kwargs", "image_size", "crop", "grayscale")
# Model kwargs that train passes itself (from the preprocessing) or sets at the end (flip TTA).
_IMPLIED_KWARGS = ("in_chans", "mean", "std", "image_size", "tta_flip")


def init_dir(init: str | Path) -> Path:
    """The checkpoint folder ``--init`` names: ``default`` is the bundled model."""
    if str(init) in BUNDLED and not Path(init).exists():
        if str(init) != "default":
            raise ValueError(
                f"--init {init}: the {init!r} model is an ONNX export without PyTorch weights; "
                "use --init default"
            )
        return bundled_model_dir()
    p = Path(init)
    if not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"--init {init}: not a checkpoint folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    return p


def checkpoint_arch(config: dict) -> dict[str, Any]:
    """The TrainConfig values (``ARCH_FIELDS``) that rebuild a checkpoint's network."""
    pre = config["preprocess"]
    kwargs = {
        k: v for k, v in config["model"].get("kwargs", {}).items() if k not in _IMPLIED_KWARGS
    }
    return {
        "model": config["model"]["name"],
        "model_kwargs": kwargs,
        "image_size": int(pre["image_size"]),
        "crop": float(pre.get("crop", 1.0)),
        "grayscale": bool(pre.get("grayscale", False)),
    }


def explicit_fields(cfg) -> set[str]:
    """Fields of ``cfg`` that differ from the TrainConfig defaults (the Python API's "given")."""
    out = set()
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if getattr(cfg, f.name) != default:
            out.add(f.name)
    return out


def apply_init(cfg, explicit: set[str] | None = None):
    """``cfg`` with the starting checkpoint's architecture and the fine-tune defaults filled in.

    ``explicit``: the fields the user set (the CLI knows; from Python, any field that differs
    from its default counts). An explicit architecture field that disagrees with the checkpoint
    raises ``ValueError``; explicit ``epochs``/``lr``/``warmup_epochs`` are kept. A config that
    came out of here is returned as it is (the CLI resolves with what it knows was given, then
    ``train`` must not guess again).
    """
    if not cfg.init or getattr(cfg, "_init_applied", False):
        return cfg
    src = init_dir(cfg.init)
    arch = checkpoint_arch(read_config(src))
    explicit = explicit_fields(cfg) if explicit is None else set(explicit)
    clash = [f for f in ARCH_FIELDS if f in explicit and getattr(cfg, f) != arch[f]]
    if clash:
        given = ", ".join(f"{f}={getattr(cfg, f)!r}" for f in clash)
        wanted = ", ".join(f"{f}={arch[f]!r}" for f in clash)
        raise ValueError(
            f"--init {cfg.init} is {arch['model']} at {arch['image_size']} px ({wanted}), but "
            f"{given} was asked for; leave those options out (a fine-tune keeps the starting "
            "model's architecture and preprocessing) or train from scratch without --init"
        )
    schedule = {k: v for k, v in FINETUNE_DEFAULTS.items() if k not in explicit}
    out = dataclasses.replace(cfg, **arch, **schedule)
    out._init_applied = True  # not a field: never saved, dropped by dataclasses.replace
    return out


def load_init_weights(model, init: str | Path) -> None:
    """Copy the starting checkpoint's weights into ``model`` (built from :func:`apply_init`)."""
    from safetensors.torch import load_file

    src = init_dir(init)
    state = load_file(str(src / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a starting model without an age head may gain one (--age-weight): it starts fresh
    missing = [k for k in missing if not k.startswith(("age_head.", "age_scale"))]
    if missing or unexpected:
        raise ValueError(
            f"--init {init}: its weights do not fit {type(model).__name__} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
