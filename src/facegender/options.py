"""The ``train``/``cv`` command-line options, generated from the fields of
:class:`~facegender.config.TrainConfig` and :class:`~facegender.config.AugmentConfig`.

Each option's name, default, type, choices and help come from its field, so the CLI's defaults
are the Python API's by construction; ``--config`` loads a recipe through
:func:`facegender.recipe.read_recipe` and makes its keys the defaults the flags override.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, Field, fields

import click

from facegender.config import AugmentConfig, TrainConfig


class JsonDict(click.ParamType):
    """A JSON object on the command line; a dict (a recipe's TOML table) passes as it is."""

    name = "json"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return dict(value)
        try:
            out = json.loads(value)
        except json.JSONDecodeError as e:
            self.fail(f"is not JSON: {e}", param, ctx)
        if not isinstance(out, dict):
            self.fail(f"must be a JSON object, got {value!r}", param, ctx)
        return out


def _default(f: Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def field_option(f: Field, kind) -> click.Option:
    """The click option of one config field."""
    flag = "--" + f.name.replace("_", "-")
    meta = f.metadata
    required = f.default is MISSING and f.default_factory is MISSING
    default = _default(f)
    kw = {"help": meta.get("help") or None, "default": default, "required": required}
    kw["show_default"] = not required and isinstance(default, bool | int | float | str)
    names = [flag]
    if kind is bool:
        names = [meta.get("flag") or f"{flag}/--no-{flag[2:]}"]
    elif kind == list[str]:
        kw["multiple"], kw["default"] = True, ()
    elif kind is dict:
        kw["type"], kw["default"] = JsonDict(), "{}"
    elif meta.get("choices"):
        kw["type"] = click.Choice(meta["choices"])
    elif kind in (int, float):
        kw["type"] = kind
    elif f.name == "out":
        kw["type"] = click.Path(file_okay=False)
    return click.Option(names, **kw)


def config_options() -> list[click.Option]:
    """One option per TrainConfig field, in field order, augmentation's fields in its place."""
    hints = typing.get_type_hints(TrainConfig)
    aug_hints = typing.get_type_hints(AugmentConfig)
    params = []
    for f in fields(TrainConfig):
        if f.name == "augment":
            params += [field_option(a, aug_hints[a.name]) for a in fields(AugmentConfig)]
        else:
            params.append(field_option(f, hints[f.name]))
    return params


def _load_recipe(ctx: click.Context, _param, value: str | None):
    """``--config recipe.toml``: its keys become the defaults; flags on the command line win."""
    if value:
        from facegender.recipe import read_recipe

        try:
            recipe = read_recipe(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        ctx.default_map = {**(ctx.default_map or {}), **recipe}
    return value


recipe_option = click.Option(
    ["--config"],
    type=click.Path(exists=True, dir_okay=False),
    callback=_load_recipe,
    is_eager=True,
    expose_value=False,
    help="TOML recipe whose keys set the defaults.",
)


def train_config(opts: dict) -> TrainConfig:
    """The TrainConfig of a ``train``/``cv`` invocation's options (a bad value: a usage error,
    before any data is read)."""
    try:
        cfg = TrainConfig.from_flat(opts)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not cfg.init:
        return cfg
    from facegender.finetune import apply_init

    ctx = click.get_current_context()
    given = {  # set on the command line or in a recipe: the rest may come from --init
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
    }
    try:
        return apply_init(cfg, given)
    except (ValueError, FileNotFoundError) as e:
        raise click.UsageError(str(e)) from None
