"""The training configuration: one dataclass field per knob, with its default, help and range.

``facegender train``/``cv`` build their options from these fields (:mod:`facegender.options`),
recipes (:mod:`facegender.recipe`) set them by name, and the Python API constructs them directly,
so the three cannot drift apart: a default, a choice or a help text exists only here.
:class:`TrainConfig` checks every value when it is built, before any image is read, so a typo
fails at once instead of after the data set has been decoded.

This module imports neither torch, numpy nor click: the CLI reads it on every start.
"""

from __future__ import annotations

import difflib
import numbers
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
BALANCES = ("none", "source", "source_label", "age", "age_race")
PRECISIONS = ("auto", "fp32", "bf16")
KEEPS = ("best", "last")
MIXES = ("none", "mixup", "cutmix")
# The crops an image can be decoded as (data.cache), and what each face_crop setting trains on:
# the first view of a setting is the one validated on.
CROPS = ("own", "aligned")
FACE_CROP_VIEWS = {"own": ("own",), "aligned": ("aligned",), "both": ("own", "aligned")}
FACE_CROPS = tuple(FACE_CROP_VIEWS)
DEVICES = ("cpu", "cuda")


def knob(default=MISSING, *, help: str = "", choices=None, factory=MISSING, flag=None, **bounds):
    """A dataclass field with its CLI help, allowed ``choices`` and ``bounds`` beside it.

    ``bounds``: ``ge``/``gt``/``le``/``lt`` (>=, >, <=, <). ``flag``: the on/off spelling of a
    boolean option when it is not ``--name/--no-name`` (e.g. ``--grayscale/--rgb``).
    """
    meta = {"help": help, "choices": choices, "flag": flag, "bounds": bounds}
    return field(default=default, default_factory=factory, metadata=meta)


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BOUND_OK = {
    "ge": lambda v, b: v >= b,
    "gt": lambda v, b: v > b,
    "le": lambda v, b: v <= b,
    "lt": lambda v, b: v < b,
}


def suggest(word: str, known) -> str:
    """`` (did you mean X?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _coerce(name: str, value, kind):
    """``value`` as ``kind`` (an int where a float is declared: a float; numpy scalars: plain),
    or ``ValueError``; kinds other than bool/int/float/str pass through."""
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(kind)
    if ok is None:
        return value
    if not ok:
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return kind(value)


def _check(obj, hints: dict) -> None:
    """Coerce numbers to the declared type; refuse wrong types, unknown choices, out-of-range."""
    for f in fields(obj):
        value = _coerce(f.name, getattr(obj, f.name), hints[f.name])
        setattr(obj, f.name, value)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(
                f"unknown {f.name} {value!r}{suggest(str(value), choices)}; "
                f"use one of {', '.join(choices)}"
            )
        for op, bound in f.metadata.get("bounds", {}).items():
            if not _BOUND_OK[op](value, bound):
                raise ValueError(f"{f.name} must be {_BOUND_TEXT[op]} {bound}, got {value!r}")


@dataclass
class AugmentConfig:
    """Batch augmentation (:func:`facegender.augment.augment_batch`); the defaults are the ones
    ``facegender train`` has always used, so the CLI and the Python API train the same model."""

    flip: float = knob(0.5, help="Flip probability.", ge=0.0, le=1.0)
    rotation: float = knob(10.0, help="Max degrees either way.", ge=0.0, le=180.0)
    shift: float = knob(0.08, help="Max fraction of the side either way.", ge=0.0, lt=1.0)
    shear: float = knob(5.0, help="Max degrees either way.", ge=0.0, lt=90.0)
    zoom: float = knob(0.1, help="Max relative zoom in or out.", ge=0.0, lt=1.0)
    brightness: float = knob(0.2, help="Max relative brightness change.", ge=0.0, le=1.0)
    contrast: float = knob(0.2, help="Max relative contrast change.", ge=0.0, le=1.0)
    erase: float = knob(0.0, help="Random-erasing probability.", ge=0.0, le=1.0)

    def __post_init__(self) -> None:
        _check(self, typing.get_type_hints(AugmentConfig))

    @property
    def any_geometry(self) -> bool:
        return any((self.rotation, self.shift, self.shear, self.zoom))


_BALANCE_HELP = (
    "source(_label): each source (x label) draws an equal share. age: within each source, "
    "age bands draw by the square root of their size (more children and old faces); age_race: "
    "the same over age band x race cells."
)
_PRECISION_HELP = (
    "bf16: autocast the forward pass to bfloat16 (weights and optimizer stay float32); "
    "1.8x faster steps on an AVX512-BF16 CPU, 12x slower on AVX2 (benchmarks/train_step.py). "
    "auto: bf16 on a GPU or a CPU with AVX512-BF16/AMX, fp32 elsewhere; the log says which."
)
_FACE_CROP_HELP = (
    "own: each data set's crop. aligned: predict's detector + alignment (cached; no face "
    "found: own crop, counted). both: one of the two per image and epoch."
)


@dataclass
class TrainConfig:
    """Everything one training run depends on; stored in the checkpoint as ``train_args``."""

    data: list[str] = knob(help="Folder or CSV manifest (repeatable).")
    out: str = knob(help="Checkpoint folder.")
    val: list[str] = knob(
        factory=list, help="Validation folder/CSV (repeatable); else --val-split."
    )
    val_split: float = knob(0.1, help="Share of DATA held out for validation.", ge=0.0, lt=1.0)
    model: str = knob("fgnet_m", help="Registered model name.")
    model_kwargs: dict = knob(
        factory=dict, help="JSON kwargs for the model, e.g. '{\"dropout\": 0.3}'."
    )
    image_size: int = knob(64, help="Side of the square model input, px.", ge=8)
    crop: float = knob(
        1.0, help="Fraction of the centred square kept before resizing.", gt=0.0, le=1.0
    )
    grayscale: bool = knob(False, help="One grey channel instead of RGB.", flag="--grayscale/--rgb")
    epochs: int = knob(20, help="Training epochs.", ge=1)
    batch_size: int = knob(128, help="Global batch size (all processes together).", ge=1)
    lr: float = knob(3e-3, help="Peak learning rate.", gt=0.0)
    weight_decay: float = knob(0.05, help="Weight decay of conv/linear weights.", ge=0.0)
    warmup_epochs: float = knob(1.0, help="Linear warm-up, in epochs.", ge=0.0)
    optimizer: str = knob("adamw", help="Optimizer.", choices=OPTIMIZERS)
    schedule: str = knob("cosine", help="Learning rate after warm-up.", choices=SCHEDULES)
    label_smoothing: float = knob(
        0.0, help="Targets pulled towards 0.5 by this much.", ge=0.0, lt=1.0
    )
    child_smoothing: float = knob(
        0.0,
        help="Extra label smoothing for faces under 13 (known ages), on top of "
        "--label-smoothing: teaches the model to be less sure where it reads gender worst.",
        ge=0.0,
        lt=1.0,
    )
    age_weight: float = knob(
        0.0,
        help="Weight of an auxiliary age-class loss (faces of known age; the model gets an age "
        "head). After training, one logit scale per age class is fitted on the validation "
        "split, so faces read as children get softer probabilities. 0: no age head.",
        ge=0.0,
    )
    progressive_size: int = knob(
        0,
        help="Progressive resizing: train the first epoch at this side, px, growing in steps of "
        "8 to --image-size at --progressive-until of the epochs (facegender.progressive); "
        "cheaper epochs early. 0: every epoch at --image-size.",
        ge=0,
    )
    progressive_until: float = knob(
        0.75,
        help="Share of the epochs after which every batch is at --image-size "
        "(with --progressive-size).",
        gt=0.0,
        le=1.0,
    )
    ema: float = knob(
        0.0, help="EMA decay of the weights per step (e.g. 0.999); 0 disables.", ge=0.0, lt=1.0
    )
    balance: str = knob("none", help=_BALANCE_HELP, choices=BALANCES)
    mix: str = knob(
        "none",
        help="Blend pairs of training images and their targets (facegender.mix): mixup averages "
        "two faces, cutmix pastes a box of one into the other.",
        choices=MIXES,
    )
    mix_alpha: float = knob(
        0.2, help="Beta(alpha, alpha) of each batch's mixing weight (with --mix).", gt=0.0
    )
    mix_prob: float = knob(0.5, help="Share of batches mixed (with --mix).", ge=0.0, le=1.0)
    class_weights: bool = knob(
        False, help="Weigh each female image's loss by n_male / n_female (labels weigh the same)."
    )
    group_dro: float = knob(
        0.0,
        help="Group DRO step size (facegender.group_dro): each source x race x gender group's "
        "loss weight grows with its training loss, so the hardest groups pull hardest. "
        "0 disables; the weights compound over steps, so keep it small: in the 45-epoch "
        "recipe 0.0015 lifted the worst group 4 points and cost 1.1 overall (MODEL_CARD.md).",
        ge=0.0,
    )
    patience: int = knob(
        0, help="Early stopping after N epochs without validation-loss gain; 0 disables.", ge=0
    )
    keep: str = knob(
        "best",
        help="Checkpoint kept in model.safetensors: best (lowest validation loss) or last "
        "(the final epoch's weights: short fine-tunes whose loss is lowest at epoch 1 stay "
        "scoreable). Early stopping still follows the best validation loss.",
        choices=KEEPS,
    )
    tta_flip: bool = knob(True, help="Average the logits of the image and its mirror at inference.")
    seed: int = knob(0, help="Seed of the split, initial weights, order and augmentation.")
    split_seed: int = knob(
        -1,
        help="Seed of the validation split alone (-1: --seed), so that runs with other --seed "
        "values are scored on the same held-out faces and can be compared in pairs.",
        ge=-1,
    )
    threads: int = knob(0, help="Torch threads; 0 = all.", ge=0)
    max_train: int = knob(0, help="Use at most N training images (quick runs); 0 = all.", ge=0)
    cache_dir: str | None = knob(None, help="Decoded-image cache (default ~/.cache/facegender).")
    progress: bool = knob(True, help="Progress bars.")
    device: str = knob(
        "cpu",
        help="cuda: train on the GPU (under torchrun: one GPU per process, nccl; see "
        "docs/scale.md).",
        choices=DEVICES,
    )
    precision: str = knob("auto", help=_PRECISION_HELP, choices=PRECISIONS)
    # own: each data set's crop | aligned: predict's detect + align crop | both: one of the two
    # drawn per image and epoch (validation and its metrics on own crops, temperature on both)
    face_crop: str = knob("own", help=_FACE_CROP_HELP, choices=FACE_CROPS)
    channels_last: bool = knob(
        False, help="NHWC memory layout for the convolutions (often faster on CPU)."
    )
    init: str | None = knob(
        None,
        help="Fine-tune: start from `default` (the bundled model) or a checkpoint folder. Model "
        "and preprocessing come from it; unless given, --epochs 5 --lr 3e-4 --warmup-epochs 0 "
        "(facegender.finetune).",
    )
    teacher: list[str] = knob(
        factory=list,
        help="Distil: mix the mean P(female) of these teachers (repeatable) into every training "
        "target (facegender.distill). A teacher is a trained checkpoint folder with this run's "
        "preprocessing, or a folder with probabilities.csv (path,p_female) from another model; "
        "either must never have trained on this run's validation split (its validation.csv).",
    )
    distill: float = knob(
        0.5,
        help="Weight of the teachers' probability in each target (with --teacher).",
        ge=0.0,
        le=1.0,
    )
    augment: AugmentConfig = knob(factory=AugmentConfig)

    def __post_init__(self) -> None:
        for key in ("data", "val", "teacher"):  # a path, or any sequence of them -> list of str
            value = getattr(self, key)
            setattr(self, key, [str(value)] if isinstance(value, str) else [str(v) for v in value])
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.out = str(self.out)
        self.model_kwargs = dict(self.model_kwargs)
        _check(self, typing.get_type_hints(TrainConfig))
        if not self.data:
            raise ValueError("no training data: give at least one --data folder or CSV")
        _check_model(self.model)
        if self.progressive_size >= self.image_size:
            raise ValueError(
                f"--progressive-size {self.progressive_size} must be below --image-size "
                f"{self.image_size} (or 0 to train at one size)"
            )

    def preprocess(self):
        """The :class:`~facegender.preprocess.PreprocessConfig` this run trains with."""
        from facegender.preprocess import PreprocessConfig

        ch = 1 if self.grayscale else 3
        return PreprocessConfig(
            self.image_size, self.crop, self.grayscale, (0.5,) * ch, (0.25,) * ch
        )

    @property
    def val_seed(self) -> int:
        """The seed the validation split is drawn with: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed < 0 else self.split_seed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild from ``to_dict()`` output, e.g. a checkpoint's ``train_args`` (keys this
        version no longer knows are ignored, so older checkpoints still load)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["augment"] = AugmentConfig(**known.get("augment", {}))
        return cls(**known)

    @classmethod
    def from_flat(cls, d: dict) -> TrainConfig:
        """Build from one flat mapping, augmentation keys (``flip``, ``rotation``, ...) beside
        the others, as the CLI and recipes spell them; an unknown key raises ``ValueError``."""
        unknown = sorted(set(d) - flat_keys())
        if unknown:
            hints = ", ".join(k + suggest(k, flat_keys()) for k in unknown)
            raise ValueError(f"unknown training setting(s): {hints}")
        aug = {k: v for k, v in d.items() if k in AugmentConfig.__dataclass_fields__}
        rest = {k: v for k, v in d.items() if k not in AugmentConfig.__dataclass_fields__}
        return cls(augment=AugmentConfig(**aug), **rest)


def flat_keys() -> set[str]:
    """Every key of the flat spelling: TrainConfig's fields with augment's in its place."""
    return (set(TrainConfig.__dataclass_fields__) - {"augment"}) | set(
        AugmentConfig.__dataclass_fields__
    )


def _check_model(name: str) -> None:
    """A registered architecture (checked only where the model registry, i.e. torch, exists)."""
    try:
        from facegender.models import list_models
    except ModuleNotFoundError:
        return
    names = list_models()
    if name not in names:
        raise ValueError(
            f"unknown model {name!r}{suggest(name, names)}; use one of {', '.join(names)}"
        )
