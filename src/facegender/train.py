"""Training: AdamW with warm-up + cosine, batch augmentation, EMA, early stopping, resumable.

Layout of ``--out DIR``:
  ``model.safetensors`` + ``config.json``   the kept checkpoint: the best so far by validation
                                             loss, or with ``--keep last`` the latest epoch
  ``last/``                                 resume state: weights, EMA, optimizer, epoch, history
  ``history.csv``, ``history.json``         per-epoch metrics
  ``curves.png``                            loss and accuracy curves
  ``validation.csv``                        the validation split as a manifest, for ``evaluate``

Reading order: :func:`train` -> :func:`setup` (data, model, EMA copy, optimizer: a :class:`Run`)
-> :func:`fit`, which per epoch calls :func:`train_one_epoch` (:func:`train_step` per batch),
:func:`validate` (through :class:`~facegender.classifier.TorchClassifier`, the classifier code
evaluation uses) and :func:`save_epoch`, and stops early by :func:`should_stop` -> :func:`finalize`
(flip TTA, temperature, final metrics). The settings are :class:`~facegender.config.TrainConfig`.

Each epoch's shuffling, augmentation and dropout are seeded from ``(seed, epoch)``, so a run
resumed from ``last/`` continues exactly as the uninterrupted run would have.

Under ``torchrun`` (see :mod:`facegender.distributed` and docs/scale.md) the same loop runs in every
process: ``batch_size`` stays the global batch, each rank trains on its slice of it through
DistributedDataParallel, metrics are summed over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from facegender import distributed as fgdist
from facegender.age_calibration import fit_age_calibration
from facegender.augment import augment_batch
from facegender.checkpoint import CONFIG_FILE, make_config, save_checkpoint, write_json
from facegender.classifier import TorchClassifier
from facegender.config import PRECISIONS, SCHEDULES, TrainConfig
from facegender.data import DataSet, read_data
from facegender.data.cache import decode_dataset, decode_key, default_cache_dir
from facegender.data.manifest import write_manifest
from facegender.distill import cached_probabilities, is_file_teacher, soft_targets
from facegender.group_dro import GroupDRO, group_ids, prior_shares
from facegender.labels import AGE_CLASSES, age_class, age_group, is_child
from facegender.metrics import binary_metrics, expected_calibration_error, fit_temperature
from facegender.mix import mix_batch
from facegender.models import create_model
from facegender.preprocess import PreprocessConfig, probability, to_batch
from facegender.progressive import resize_batch, size_at


def face_crop_views(face_crop: str) -> list[str]:
    """The decoded views a ``face_crop`` setting trains on; the first is validated on."""
    from facegender.config import FACE_CROP_VIEWS

    if face_crop not in FACE_CROP_VIEWS:
        raise ValueError(f"unknown face_crop {face_crop!r}; use own, aligned or both")
    return list(FACE_CROP_VIEWS[face_crop])


def draw_views(n_views: int, n: int, rng) -> np.ndarray:
    """Which face-crop view each of ``n`` images comes from (drawn only when there are several)."""
    return rng.integers(0, n_views, n) if n_views > 1 else np.zeros(n, dtype=np.int64)


def batch_arrays(views: list[np.ndarray], idx: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """The images ``idx``, each from the view ``pick`` names (:func:`draw_views`)."""
    out = np.asarray(views[0][idx])
    for v in range(1, len(views)):
        out[pick == v] = views[v][idx[pick == v]]
    return out


def split_validation(data: DataSet, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified by (source, label), deterministic in ``seed``: returns (train, val) indices."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[int]] = {}
    for i, s in enumerate(data.samples):
        strata.setdefault((s.source, s.label), []).append(i)
    train, val = [], []
    for key in sorted(strata):
        idx = np.array(strata[key])
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(val)


def sample_weights(data: DataSet, idx: list[int], mode: str) -> np.ndarray | None:
    """Per-sample draw probabilities for an epoch, or None for a plain shuffle.

    ``source`` / ``source_label``: each source (x label) draws the same share. ``age``: each source
    keeps its natural share, and inside it each age band draws in proportion to the square root
    of its size (children and the old, the rare bands, are drawn more often without letting a few
    hundred faces dominate); images without an age form one band. ``age_race``: the same over
    age band x race cells, so a source's rare races (and their children) are drawn more too.
    """
    if mode == "none":
        return None
    samples = [data.samples[i] for i in idx]
    if mode in ("source", "source_label"):
        keys = [(s.source,) if mode == "source" else (s.source, s.label) for s in samples]
        counts = Counter(keys)
        w = np.array([1.0 / counts[k] for k in keys])
        return w / w.sum()
    if mode not in ("age", "age_race"):
        raise ValueError(f"unknown balance {mode!r}")
    keys = [(s.source, age_group(s), s.race if mode == "age_race" else None) for s in samples]
    return _root_weights(keys, Counter(s.source for s in samples))


def _root_weights(keys: list[tuple], per_source: Counter) -> np.ndarray:
    """Draw probabilities that keep each source's share (``key[0]``) and split it over the
    source's cells in proportion to the square root of each cell's size."""
    counts, root_sum = Counter(keys), Counter()
    for cell, n in counts.items():
        root_sum[cell[0]] += math.sqrt(n)
    w = np.array(
        [per_source[k[0]] * math.sqrt(counts[k]) / root_sum[k[0]] / counts[k] for k in keys]
    )
    return w / w.sum()


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    """Learning rate of optimizer step ``step`` of ``total``: linear warm-up over the first
    ``warmup`` steps to ``base``, then ``base`` (constant) or a cosine decay to 0 at ``total``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Elsewhere (AVX2 only) PyTorch emulates it and a bf16 training step is about 12x slower than
    fp32 (benchmarks/train_step.py), so ``auto`` must not pick it there.
    """
    from facegender.cpu import cpu_info

    return bool(cpu_info(cpuinfo)["flags"] & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device_type: str = "cpu") -> str:
    """``auto`` -> ``bf16`` on a GPU or a CPU with native bfloat16, ``fp32`` elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def forward_precision(precision: str, device_type: str = "cpu"):
    """The autocast context of a training forward pass: bfloat16 for ``bf16``, off for ``fp32``.

    Only the forward pass is cast; weights, gradients, optimizer state and checkpoints stay float32.
    """
    precision = resolve_precision(precision, device_type)
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


# ---- resume state: safetensors for tensors, JSON for the rest (no pickle) ----


def _save_state(
    d: Path, model, ema, opt, epoch: int, history: list, best: dict, dro: GroupDRO | None = None
) -> None:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in model.state_dict().items()}
    if dro is not None:
        tensors.update(dro.state())
    if ema is not None:
        tensors.update({f"ema.{k}": v.contiguous().cpu() for k, v in ema.state_dict().items()})
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for name, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{pid}.{name}"] = t.contiguous().cpu()
    save_file(tensors, str(d / "state.safetensors.tmp"))
    os.replace(d / "state.safetensors.tmp", d / "state.safetensors")
    write_json(
        d / "state.json",
        {"epoch": epoch, "history": history, "best": best, "param_groups": sd["param_groups"]},
    )


def _load_state(d: Path, model, ema, opt, dro: GroupDRO | None = None) -> tuple[int, list, dict]:
    from safetensors.torch import load_file

    tensors = load_file(str(d / "state.safetensors"))
    if dro is not None:
        dro.load(tensors)
    meta = json.loads((d / "state.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["epoch"], meta["history"], meta["best"]


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for float tensors (weights and BatchNorm
    statistics); integer buffers (BatchNorm's batch counter) are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


VAL_BATCH = 512  # images per validation forward pass


def _validation_logits(net, val_x: np.ndarray, d: fgdist.Dist, pre: PreprocessConfig) -> np.ndarray:
    """Logits of ``net`` through evaluation's own classifier code (:class:`TorchClassifier`).

    Under torchrun each rank scores its share of the validation set and every rank gets all the
    logits.
    """
    clf = TorchClassifier(net, {"preprocess": pre.to_dict()})  # puts net in eval mode
    if not d.enabled:
        return clf.logits(val_x, batch_size=VAL_BATCH)
    start, stop = fgdist.shard_bounds(len(val_x), d)
    part = torch.from_numpy(clf.logits(val_x[start:stop], batch_size=VAL_BATCH))
    return fgdist.gather_rows(part, len(val_x), d).numpy()


def _write_history(out: Path, history: list[dict]) -> None:
    write_json(out / "history.json", history)
    if history:
        with (out / "history.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
        plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.set(title="Loss", xlabel="epoch")
    b.plot(ep, [h["train_acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set(title="Accuracy", xlabel="epoch")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_skipped(skipped: list, path: Path, log=print) -> None:
    """Count skipped items by reason in the log; list every one in ``path`` (CSV)."""
    if not skipped:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows((s.path, s.reason) for s in skipped)
    kinds: dict[str, int] = {}
    for s in skipped:
        kind = s.reason.split(":")[0].split(" of ")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    log(f"skipped {len(skipped)} bad items ({summary}); every one is listed in {path}")
    for s in skipped[:3]:
        log(f"  e.g. {s.path}: {s.reason}")


def prepare_data(
    cfg: TrainConfig,
    log=print,
    split: tuple[list[int], list[int]] | None = None,
    report: bool = True,
    face_crop: str | None = None,
):
    """Read, decode (cached) and split: returns arrays, samples and train/val indices.

    ``split`` gives explicit (train, val) indices into the decoded ``cfg.data`` (cross-validation
    uses it to hold a fold out); indices in neither are not used at all. ``report=False`` writes
    no ``skipped.csv`` (the non-zero ranks of a distributed run). ``face_crop`` (``own`` or
    ``aligned``; default: the first view of ``cfg.face_crop``) picks the crop decoded; every
    crop keeps the same images in the same order.
    """
    pre = cfg.preprocess()
    crop = face_crop or face_crop_views(cfg.face_crop)[0]
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    train_ds = read_data(cfg.data)
    arrays, train_ds = decode_dataset(train_ds, pre, cache, progress=cfg.progress, face_crop=crop)
    if cfg.val:
        val_ds = read_data(cfg.val)
        val_arrays, val_ds = decode_dataset(
            val_ds, pre, cache, progress=cfg.progress, face_crop=crop
        )
        tr_idx = list(range(len(train_ds.samples)))
        va_idx = list(range(len(train_ds.samples), len(train_ds.samples) + len(val_ds.samples)))
        arrays = np.concatenate([np.asarray(arrays), np.asarray(val_arrays)])
        train_ds.extend(val_ds)
    elif split is not None:
        tr_idx, va_idx = sorted(int(i) for i in split[0]), sorted(int(i) for i in split[1])
    else:
        tr_idx, va_idx = split_validation(train_ds, cfg.val_split, cfg.val_seed)
    if cfg.max_train and len(tr_idx) > cfg.max_train:
        rng = np.random.default_rng(cfg.seed)
        tr_idx = sorted(rng.choice(tr_idx, cfg.max_train, replace=False).tolist())
    if report:
        report_skipped(train_ds.skipped, Path(cfg.out) / "skipped.csv", log)
    if train_ds.no_face:
        log(
            f"{crop} crops: no face found in {len(train_ds.no_face)} images; "
            "they keep the data set's own crop"
        )
    if not tr_idx or not va_idx:
        raise ValueError(
            "need at least one training and one validation image after skipping bad ones"
        )
    return np.ascontiguousarray(arrays), train_ds, tr_idx, va_idx


def train(
    cfg: TrainConfig,
    resume: bool = False,
    log=print,
    split: tuple[list[int], list[int]] | None = None,
) -> Path:
    """Train, checkpoint every epoch, calibrate; returns the output folder (best checkpoint).

    ``split``: explicit (train, val) indices, see :func:`prepare_data`. Launched by torchrun,
    this joins the process group and every rank must call it with the same ``cfg``.
    """
    from facegender.finetune import apply_init

    cfg = apply_init(cfg)
    d = fgdist.from_env(cfg.device)
    try:
        return _train(cfg, resume, log if d.is_main else _quiet, split, d)
    finally:
        fgdist.shutdown(d)


def _quiet(_msg: str) -> None:
    pass


def _train(cfg: TrainConfig, resume: bool, log, split, d: fgdist.Dist) -> Path:
    """setup -> (train_one_epoch, validate, save) per epoch -> finalize (rank 0)."""
    t_start = time.perf_counter()
    run = setup(cfg, split, log, d)
    history = fit(run, resume, log)
    if d.is_main:
        finalize(
            cfg,
            run.out,
            run.data.val_views,
            run.data.val_y,
            run.data.val_samples,
            history,
            time.perf_counter() - t_start,
            log,
            processes=d.world,
        )
    fgdist.barrier(d)  # every rank returns once the final checkpoint is on disk
    return run.out


@dataclass
class Data:
    """The decoded images a run learns from and is scored on, read once by :func:`setup`."""

    views: list[np.ndarray]  # every decoded image, one array per face-crop view
    labels: np.ndarray  # float32 label of every decoded image (1 = female)
    smoothing: np.ndarray  # float32 label smoothing of every image (--child-smoothing on top)
    train_idx: np.ndarray
    val_views: list[np.ndarray]  # the validation images in each view; the first is scored
    val_y: np.ndarray
    val_samples: list
    summary: dict
    ages: np.ndarray | None = None  # int64 age class of every image, -1 unknown (--age-weight)
    teacher: np.ndarray | None = None  # views x N teachers' P(female) (--teacher), or None
    distill: float = 0.0  # the teachers' weight in each target
    groups: np.ndarray | None = None  # int64 group of every training image (--group-dro)
    group_names: list[str] = field(default_factory=list)  # what the group indices name

    def targets(self, idx: np.ndarray, pick: np.ndarray) -> np.ndarray:
        """The training targets of images ``idx`` drawn in views ``pick``."""
        teacher = None if self.teacher is None else self.teacher[pick, idx]
        return soft_targets(self.labels[idx], self.smoothing[idx], teacher, self.distill)


@dataclass
class Run:
    """What :func:`setup` builds once and every epoch reads."""

    cfg: TrainConfig
    d: fgdist.Dist
    device: torch.device
    out: Path
    pre: PreprocessConfig
    data: Data
    model: torch.nn.Module  # the weights being trained
    net_train: torch.nn.Module  # what the training step calls: the model, or its DDP wrapper
    ema: torch.nn.Module | None
    opt: torch.optim.Optimizer
    precision: str  # fp32 | bf16, resolved
    memory_format: torch.memory_format
    steps_per_epoch: int
    warmup: int  # warm-up steps
    pos_weight: torch.Tensor | None  # --class-weights
    weights: np.ndarray | None  # per-sample draw probabilities (--balance), None: a shuffle
    dro: GroupDRO | None = None  # the online group weights (--group-dro)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def net(self) -> torch.nn.Module:
        """The network validated and saved: the EMA weights when there are some."""
        return self.ema if self.ema is not None else self.model

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.d.is_main

    def checkpoint_config(self, **extra) -> dict:
        return _config(self.cfg, self.net, self.pre, self.data.summary, **extra)


def setup(cfg: TrainConfig, split, log, d: fgdist.Dist) -> Run:
    """Seed, read and decode the data, build the model, its EMA copy and the optimizer."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    fgdist.check_batch(cfg.batch_size, d)
    device = torch.device(d.device)

    data, weights = _load_data(cfg, split, log, d)
    pre = cfg.preprocess()
    model, precision, memory_format = _build_model(cfg, pre, device, log)
    steps_per_epoch = max(1, len(data.train_idx) // cfg.batch_size)
    pos_weight = None
    if cfg.class_weights:
        pos_weight = torch.tensor(positive_weight(data.labels[data.train_idx])).to(device)
    return Run(
        cfg=cfg,
        d=d,
        device=device,
        out=out,
        pre=pre,
        data=data,
        model=model,
        ema=copy.deepcopy(model) if cfg.ema else None,  # copied before DDP wraps the model
        net_train=_data_parallel(model, d, device),
        opt=_optimizer(cfg, model),
        precision=precision,
        memory_format=memory_format,
        steps_per_epoch=steps_per_epoch,
        warmup=int(cfg.warmup_epochs * steps_per_epoch),
        pos_weight=pos_weight,
        weights=weights,
        dro=_group_dro(cfg, data, weights, d),
    )


def _group_dro(cfg: TrainConfig, data: Data, weights, d: fgdist.Dist) -> GroupDRO | None:
    """``--group-dro``: the group weights, starting at each group's share of the training draw."""
    if data.groups is None:
        return None
    prior = prior_shares(data.groups[data.train_idx], len(data.group_names), weights)
    return GroupDRO(data.group_names, prior, cfg.group_dro, d.world)


def _train_groups(cfg: TrainConfig, samples, tr_idx) -> tuple[np.ndarray | None, list[str]]:
    """Each image's group index (training images only; -1 elsewhere) and the group names, with
    ``--group-dro``; a group no training image is in does not exist."""
    if not cfg.group_dro:
        return None, []
    ids, names = group_ids([samples[i] for i in tr_idx])
    groups = np.full(len(samples), -1, dtype=np.int64)
    groups[np.asarray(tr_idx)] = ids
    return groups, names


def _data_parallel(model: torch.nn.Module, d: fgdist.Dist, device) -> torch.nn.Module:
    """What the training step calls: the model itself, or under torchrun its DDP wrapper."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[d.local_rank] if device.type == "cuda" else None
    )


def positive_weight(train_labels: np.ndarray) -> float:
    """``--class-weights``: the loss weight of a female (positive) image, n_male / n_female,
    so both labels weigh the same in total."""
    pos = train_labels.mean()
    return (1 - pos) / max(pos, 1e-6)


def _load_data(cfg: TrainConfig, split, log, d: fgdist.Dist) -> tuple[Data, np.ndarray | None]:
    """The decoded views and the split, and each training image's draw weight (--balance)."""
    views, ds, tr_idx, va_idx = _load_views(cfg, split, log, d)
    labels = np.array([s.label for s in ds.samples], dtype=np.float32)
    child = np.array([is_child(s) for s in ds.samples], dtype=np.float32)
    smoothing = np.minimum(cfg.label_smoothing + cfg.child_smoothing * child, 0.99)
    log(f"data: {len(tr_idx)} train, {len(va_idx)} validation, {len(ds.skipped)} skipped")
    teacher = _teacher(cfg, views, ds.samples, va_idx, log, save=d.is_main)
    groups, group_names = _train_groups(cfg, ds.samples, tr_idx)
    data = Data(
        views=views,
        labels=labels,
        smoothing=smoothing.astype(np.float32),
        ages=np.array([age_class(s) for s in ds.samples], dtype=np.int64),
        train_idx=np.array(tr_idx),
        val_views=[v[va_idx] for v in views],
        val_y=labels[va_idx],
        val_samples=[ds.samples[i] for i in va_idx],
        summary={**ds.summary(), "train": len(tr_idx), "val": len(va_idx)},
        teacher=teacher,
        distill=cfg.distill,
        groups=groups,
        group_names=group_names,
    )
    return data, sample_weights(ds, tr_idx, cfg.balance)


def _teacher(cfg: TrainConfig, views, samples, va_idx, log, save: bool) -> np.ndarray | None:
    """The teachers' probabilities (``--teacher``; :mod:`facegender.distill`), or None; logs
    their accuracy on the validation split, the head-room the run can draw on. They are kept in
    ``OUT/last`` with the resume state, so ``--resume`` does not score the images again."""
    if not cfg.teacher:
        return None
    t0 = time.perf_counter()
    val_samples = [samples[i] for i in va_idx]
    bf16 = resolve_precision(cfg.precision) == "bf16" and cfg.device == "cpu"
    pre, names = cfg.preprocess(), face_crop_views(cfg.face_crop)
    probs, reused = cached_probabilities(
        Path(cfg.out) / "last",
        cfg.teacher,
        views,
        pre,
        [s.path for s in val_samples],
        "|".join(decode_key(samples, pre, crop) for crop in names),
        bf16,
        save,
        [s.path for s in samples],
    )
    val_y = np.array([s.label for s in val_samples])
    accs = [float(((p[va_idx] > 0.5) == val_y).mean()) for p in probs]
    models_in_bf16 = bf16 and not all(is_file_teacher(Path(t)) for t in cfg.teacher)
    done = "read back from last/" if reused else f"{'in bf16 ' if models_in_bf16 else ''}in"
    log(
        f"teachers ({len(cfg.teacher)}) scored {probs.shape[1]} images x {len(views)} views "
        f"{done} {time.perf_counter() - t0:.0f}s; validation accuracy "
        + ", ".join(f"{n} {a:.4f}" for n, a in zip(names, accs, strict=True))
        + f"; distill {cfg.distill:g}"
    )
    return probs


def _load_views(cfg: TrainConfig, split, log, d: fgdist.Dist):
    """Each face-crop view of the data (same images, same order), and the split."""
    if d.local_rank != 0:
        fgdist.barrier(d)  # local rank 0 fills the decode cache first; the others then read it
    views = []
    for crop in face_crop_views(cfg.face_crop):
        arrays, ds, tr_idx, va_idx = prepare_data(
            replace(cfg, progress=cfg.progress and d.is_main) if d.enabled else cfg,
            log,
            split,
            report=d.is_main and not views,
            face_crop=crop,
        )
        views.append(arrays)
    if d.local_rank == 0:
        fgdist.barrier(d)
    return views, ds, tr_idx, va_idx


def _build_model(cfg: TrainConfig, pre: PreprocessConfig, device, log):
    """The freshly initialised model (from torch's seeded RNG), its precision and layout."""
    # an --init checkpoint with an age head brings age_classes in model_kwargs already
    kwargs = {**_age_head_kwargs(cfg), **cfg.model_kwargs}
    try:
        model = create_model(
            cfg.model,
            in_chans=pre.channels,
            mean=list(pre.mean),
            std=list(pre.std),
            image_size=cfg.image_size,
            tta_flip=False,
            **kwargs,
        )
    except TypeError as e:
        if "age_classes" not in str(e):
            raise
        raise ValueError(f"--age-weight: model {cfg.model!r} has no age head; use fgnet_*") from e
    if cfg.progressive_size and not model.any_size:
        raise ValueError(
            f"--progressive-size: model {cfg.model!r} is built for {cfg.image_size} px inputs "
            "only; use one that pools globally (fgnet_*)"
        )
    if cfg.init:
        from facegender.finetune import load_init_weights

        load_init_weights(model, cfg.init)
        log(f"starting from {cfg.init}: {cfg.epochs} epochs at lr {cfg.lr:g}")
    model = model.to(device)
    precision = resolve_precision(cfg.precision, device.type)
    log(f"precision: {precision}" + (" (auto)" if cfg.precision == "auto" else ""))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return model.to(memory_format=memory_format), precision, memory_format


def _age_head_kwargs(cfg: TrainConfig) -> dict:
    """``--age-weight``: the model kwarg that gives it an age head, refused for models without."""
    return {"age_classes": len(AGE_CLASSES)} if cfg.age_weight else {}


def fit(run: Run, resume: bool, log) -> list[dict]:
    """The epoch loop: train, validate, keep the checkpoint (``--keep``) and the resume state,
    stop early; returns the history (one row per epoch)."""
    cfg, out = run.cfg, run.out
    start_epoch, history, best = 0, [], {"val_loss": float("inf"), "epoch": -1}
    if resume and (out / "last" / "state.json").exists():
        start_epoch, history, best = _load_state(out / "last", run.model, run.ema, run.opt, run.dro)
        log(f"resumed from {out / 'last'} after epoch {start_epoch}")
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if should_stop(history, best, cfg.patience):
                log(f"early stopping: no validation-loss improvement for {cfg.patience} epochs")
                break
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, **train_one_epoch(run, epoch), **validate(run)}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            _log_epoch(row, cfg.epochs, log)
            improved = row["val_loss"] < best["val_loss"]
            if improved:
                best = {"val_loss": row["val_loss"], "epoch": len(history) - 1}
            save_epoch(run, epoch, history, best, improved or cfg.keep == "last")
    except KeyboardInterrupt:
        log(f"interrupted: {out / 'last'} holds the last finished epoch; continue with --resume")
        raise
    return history


def should_stop(history: list[dict], best: dict, patience: int) -> bool:
    """Early stopping: ``patience`` epochs (> 0) have passed since the best validation loss
    (``best["epoch"]`` indexes ``history``; -1: none yet, so every epoch counts)."""
    return bool(patience) and len(history) - 1 - best["epoch"] >= patience


def train_one_epoch(run: Run, epoch: int) -> dict:
    """One pass over an epoch's draw of the training set; returns lr, train loss and accuracy.

    Every random draw is seeded from ``(seed, epoch)`` (dropout: also the rank), so a resumed
    run repeats the uninterrupted one exactly.
    """
    cfg, d = run.cfg, run.d
    t0 = time.perf_counter()
    torch.manual_seed(
        cfg.seed * 10_007 + epoch if not d.enabled else _rank_seed(cfg.seed, epoch, d.rank)
    )
    g = torch.Generator().manual_seed(cfg.seed * 10_007 + epoch)
    rng = np.random.default_rng([cfg.seed, epoch])
    tr = run.data.train_idx
    order = (
        rng.choice(tr, size=len(tr), replace=True, p=run.weights)
        if run.weights is not None
        else rng.permutation(tr)
    )
    run.model.train()
    side = size_at(epoch, cfg.epochs, cfg.image_size, cfg.progressive_size, cfg.progressive_until)
    loss_sum = correct = seen = 0.0
    bar = tqdm(
        range(run.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        disable=not run.show,
        leave=False,
    )
    for i in bar:
        lr = lr_at(
            epoch * run.steps_per_epoch + i, run.total_steps, run.warmup, cfg.lr, cfg.schedule
        )
        for group in run.opt.param_groups:
            group["lr"] = lr
        idx = np.sort(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
        pick = draw_views(len(run.data.views), len(idx), rng)
        x = resize_batch(torch.from_numpy(to_batch(batch_arrays(run.data.views, idx, pick))), side)
        x = augment_batch(x, cfg.augment, g)
        mixed, targets = mix_batch(
            x, run.data.targets(idx, pick), cfg.mix, cfg.mix_alpha, cfg.mix_prob, rng
        )
        labels, ages = run.data.labels[idx], batch_ages(run.data, idx, mixed is not x)
        groups = None if run.data.groups is None else run.data.groups[idx]
        x = mixed
        if d.enabled:  # augmented and mixed as one batch, so each image gets its 1-process draws
            x, labels, targets, ages, groups = (
                None if a is None else fgdist.rank_slice(a, d)
                for a in (x, labels, targets, ages, groups)
            )
        loss, hits = train_step(run, x, labels, targets, ages, groups)
        loss_sum += loss * len(labels)
        correct += hits
        seen += len(labels)
        bar.set_postfix(
            loss=f"{loss_sum / seen:.4f}",
            acc=f"{correct / seen:.3f}",
            img_s=f"{seen / (time.perf_counter() - t0):.0f}",
        )
    if d.enabled:
        loss_sum, correct, seen = fgdist.all_sum([loss_sum, correct, seen], d)
        for m in (run.model, run.ema):
            if m is not None:  # BatchNorm statistics are per rank: keep rank 0's
                fgdist.broadcast_buffers(m, d)
    lr = run.opt.param_groups[0]["lr"]
    row = {"lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen}
    if run.dro is not None:
        row["dro_heaviest"] = run.dro.heaviest()
    return row | ({"train_size": side} if cfg.progressive_size else {})


def batch_ages(data: Data, idx: np.ndarray, mixed: bool) -> np.ndarray:
    """The age classes the age head learns from in a batch: none (-1) for a mixed batch,
    whose blended faces have no one age, or without ``--age-weight``."""
    if data.ages is None or mixed:
        return np.full(len(idx), -1, dtype=np.int64)
    return data.ages[idx]


def train_step(
    run: Run,
    x: torch.Tensor,
    labels: np.ndarray,
    targets: np.ndarray,
    ages: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """One optimizer step (and EMA update) on a batch; returns its mean loss and correct count.

    ``targets``: each image's soft target (:meth:`Data.targets`); ``labels`` score accuracy;
    ``ages``: age classes for the age head's loss (-1: not counted; None: no age loss);
    ``groups``: each image's group, for ``run.dro`` (--group-dro).
    """
    cfg, device = run.cfg, run.device
    x = x.to(device, memory_format=run.memory_format)
    y = torch.from_numpy(labels).to(device)
    target = torch.from_numpy(targets).to(device)
    with forward_precision(run.precision, device.type):
        logits, age_logits = run.net_train(x, aux=True)
    logits = logits.float()
    loss = gender_loss(run, logits, target, groups)
    if age_logits is not None and ages is not None:
        loss = loss + cfg.age_weight * age_loss(age_logits.float(), torch.from_numpy(ages))
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.ema is not None:
        ema_update(run.ema, run.model, cfg.ema)
    return loss.item(), ((logits.detach() > 0).float() == y).sum().item()


def gender_loss(run: Run, logits: torch.Tensor, target: torch.Tensor, groups) -> torch.Tensor:
    """Binary cross-entropy against the soft targets: the batch mean, or with ``run.dro`` the
    group-weighted mean (facegender.group_dro)."""
    if run.dro is None:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=run.pos_weight)
    per_image = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=run.pos_weight, reduction="none"
    )
    return run.dro.loss(per_image, groups)


def age_loss(age_logits: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the faces of known age (``ages >= 0``), 0 when there are none; always
    a function of the head, so every DDP rank's head gets a gradient."""
    known = (ages >= 0).to(age_logits.device)
    ce = F.cross_entropy(age_logits, ages.clamp(min=0).to(age_logits.device), reduction="none")
    return (ce * known).sum() / known.sum().clamp(min=1)


def validate(run: Run) -> dict:
    """Validation loss, accuracy and ROC-AUC of :attr:`Run.net` on the first view's images,
    through evaluation's classifier code."""
    logits = _validation_logits(run.net, run.data.val_views[0], run.d, run.pre)
    val_loss = float(
        F.binary_cross_entropy_with_logits(
            torch.from_numpy(logits), torch.from_numpy(run.data.val_y)
        )
    )
    m = binary_metrics(run.data.val_y.astype(int), probability(logits))
    return {"val_loss": val_loss, "val_acc": m["accuracy"], "val_auc": m["roc_auc"]}


def _log_epoch(row: dict, epochs: int, log) -> None:
    log(
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} "
        f"auc {row['val_auc'] or float('nan'):.4f}  {row['seconds']:.0f}s"
        + (f"  trained at {row['train_size']} px" if "train_size" in row else "")
    )


def save_epoch(run: Run, epoch: int, history: list[dict], best: dict, keep: bool) -> None:
    """Rank 0: the kept checkpoint (when ``keep``: this epoch improved, or ``--keep last``),
    the resume state, the history."""
    if not run.d.is_main:
        return
    if keep:
        save_checkpoint(run.out, run.net, run.checkpoint_config(status="training"))
    _save_state(run.out / "last", run.model, run.ema, run.opt, epoch + 1, history, best, run.dro)
    _write_history(run.out, history)


def kept_epoch(history: list[dict], keep: str) -> int | None:
    """The epoch (1-based) whose weights ``model.safetensors`` holds: the last one run, or the
    one with the lowest validation loss. Recorded so that a score says which weights it has."""
    if not history:
        return None
    rows = history[-1:] if keep == "last" else history
    return min(rows, key=lambda r: r["val_loss"])["epoch"]


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Dropout seed of one rank in one epoch: distinct per rank, fixed by (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _config(cfg: TrainConfig, net, pre: PreprocessConfig, data_summary: dict, **extra) -> dict:
    return make_config(net, pre, train_args=cfg.to_dict(), data=data_summary, **extra)


def finalize(
    cfg: TrainConfig, out: Path, val_views, val_y, val_samples, history, seconds, log, processes=1
) -> Path:
    """Reload the kept checkpoint, turn on flip TTA, fit the temperature, store final metrics.

    ``val_views``: the validation images in each crop trained on; the temperature is fitted on
    all of them (one temperature serves own crops and predict's crops), the metrics on each.
    """
    from facegender.checkpoint import load_model
    from facegender.metrics import group_metrics

    model = load_model(out)
    model.tta_flip = cfg.tta_flip
    model.model_kwargs["tta_flip"] = cfg.tta_flip
    clf = TorchClassifier(model, model.config)
    y = val_y.astype(int)
    age_calibration = fit_age_calibration(clf, val_views, y, [age_class(s) for s in val_samples])
    if age_calibration:  # the scales live in the weights
        save_checkpoint(out, model, model.config)
    view_logits = [clf.logits(v) for v in val_views]
    temperature = fit_temperature(np.concatenate(view_logits), np.tile(y, len(val_views)))
    logits = view_logits[0]
    p_raw, p_cal = probability(logits), probability(logits, temperature)
    metrics = binary_metrics(y, p_cal)
    metrics["groups"] = group_metrics(val_samples, y, p_cal)
    config = json.loads((out / CONFIG_FILE).read_text())
    config["model"]["kwargs"]["tta_flip"] = cfg.tta_flip
    config["status"] = "final"
    config["calibration"] = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(y, p_raw),
        "ece_after": expected_calibration_error(y, p_cal),
        "fitted_on": "validation split",
        **age_calibration,
    }
    config["metrics"] = {"validation": metrics}
    crops = face_crop_views(cfg.face_crop)
    for crop, z in zip(crops[1:], view_logits[1:], strict=True):
        p_view = probability(z, temperature)
        config["metrics"][f"validation_{crop}"] = {
            **binary_metrics(y, p_view),
            "groups": group_metrics(val_samples, y, p_view),
        }
    config["training"] = {
        "epochs_run": len(history),
        "kept_epoch": kept_epoch(history, cfg.keep),
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "processes": processes,
    }
    write_json(out / CONFIG_FILE, config)
    write_manifest(val_samples, out / "validation.csv")
    log(
        f"validation accuracy {metrics['accuracy']:.4f} (flip TTA {cfg.tta_flip}), "
        f"ROC-AUC {metrics['roc_auc'] or float('nan'):.4f}, temperature {temperature:.3f}, "
        f"ECE {config['calibration']['ece_before']:.4f} -> {config['calibration']['ece_after']:.4f}"
    )
    log(f"saved {out} in {seconds / 60:.1f} min")
    return out
