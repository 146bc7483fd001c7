"""Training recipes (TOML files in ``recipes/``): the config ``facegender train --config`` runs.

A recipe is a flat TOML table (or a ``[train]`` table) of :class:`~facegender.config.TrainConfig`
keys, augmentation keys (``flip``, ``rotation``, ...) beside the others. :func:`read_recipe` turns
it into that flat mapping (the CLI uses it as the defaults its flags override);
:func:`load_recipe` builds the config itself. Both refuse a key they do not know, naming the
closest known one, so a typo never falls back to a default silently.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from facegender.config import TrainConfig, flat_keys, suggest
from facegender.model_ref import BUNDLED


def read_recipe(path: str | Path) -> dict:
    """The recipe's settings as a flat dict; ``data``/``val``/``teacher`` paths made absolute
    (relative paths are relative to the recipe file; a teacher named ``default`` stays the
    bundled model). Raises ``ValueError`` for an unreadable recipe or
    an unknown key."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read recipe {path}: {e}") from None
    recipe = recipe.get("train", recipe)
    unknown = sorted(set(recipe) - flat_keys())
    if unknown:
        hints = ", ".join(k + suggest(k, flat_keys()) for k in unknown)
        raise ValueError(f"unknown key(s) in recipe {path}: {hints}")
    for key in ("data", "val", "teacher"):
        if key in recipe:
            values = recipe[key] if isinstance(recipe[key], list) else [recipe[key]]
            recipe[key] = [
                v if key == "teacher" and v in BUNDLED else _relative_to(path.parent, v)
                for v in values
            ]
    return recipe


def _relative_to(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() else str((base / p).resolve())


def load_recipe(path: str | Path, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` that ``facegender train --config PATH`` would train.

    ``overrides`` replace recipe keys (``out``, ``data``, ``epochs``, ... and the augmentation
    keys such as ``flip``); ``out`` defaults to ``.``. Unknown keys raise :class:`ValueError`.
    """
    return TrainConfig.from_flat({"out": ".", **read_recipe(path), **overrides})
