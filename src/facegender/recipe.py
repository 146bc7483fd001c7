"""Training recipes (TOML files in ``recipes/``): the config ``facegender train --config`` runs.

:func:`load_recipe` parses a recipe with the train command's own options, so the accepted keys,
the defaults of keys a recipe leaves out and the paths-relative-to-the-file rule exist once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from facegender.augment import AugmentConfig
from facegender.train import TrainConfig


def load_recipe(path: str | Path, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` that ``facegender train --config PATH`` would train.

    ``overrides`` replace fields afterwards (``out``, ``data``, ``epochs``, ... and the
    augmentation keys such as ``flip``). Unknown recipe keys raise :class:`ValueError`.
    """
    import click

    from facegender.cli import _train_config, train

    args = ["--config", str(path), "--out", str(overrides.get("out", "."))]
    try:
        ctx = train.make_context("train", args)
    except click.ClickException as e:
        raise ValueError(e.format_message()) from None
    opts = dict(ctx.params)
    opts.pop("resume", None)
    cfg = _train_config(opts)
    aug = {k: overrides.pop(k) for k in list(overrides) if k in AugmentConfig.__dataclass_fields__}
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, **aug), **overrides)
