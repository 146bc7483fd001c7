"""The held-out validation split of a checkpoint, re-created from its own training args.

Every accuracy and calibration benchmark scores the same faces: the split that the checkpoint's
run never trained on (same data, seed and split fraction), each face on its data set's own crop
and on the crop ``facegender predict`` makes of it.

    from _heldout import split_config, heldout_views
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CROPS = ("own", "aligned")


def split_config(config: dict, model_arg: str | None):
    """The checkpoint's :class:`TrainConfig`, or None (with a message) without its data.

    The bundled model's recipe paths were absolute on the machine that trained it, so for the
    bundled models they are re-pointed at ``../shared/data``.
    """
    from facegender.model_ref import BUNDLED
    from facegender.train import TrainConfig

    cfg = TrainConfig.from_dict(config["train_args"])
    cfg.progress = False
    if model_arg is None or model_arg in BUNDLED:
        shared = ROOT.parent / "shared" / "data"
        cfg.data = [str(shared / Path(d).name) for d in cfg.data]
    if not all(Path(d).is_dir() for d in cfg.data):
        print(f"data not found: {cfg.data} (this benchmark needs ../shared/data)", file=sys.stderr)
        return None
    return cfg


def heldout_views(cfg, crops=CROPS) -> tuple[dict, list, dict]:
    """``({crop: N x S x S x C arrays}, samples, {crop: faces with no face found})``.

    An image where predict's detector finds no face keeps its own crop in the ``aligned`` view.
    """
    from facegender.train import prepare_data

    views, samples, no_face = {}, None, {}
    for crop in crops:
        arrays, ds, _, va_idx = prepare_data(cfg, lambda m: None, report=False, face_crop=crop)
        samples = [ds.samples[i] for i in va_idx]
        no_face[crop] = len(set(ds.no_face) & {s.path for s in samples})
        views[crop] = np.ascontiguousarray(arrays[va_idx])
    return views, samples, no_face
