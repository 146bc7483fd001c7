"""The pieces of the training loop one at a time: the learning-rate schedule, early stopping,
the EMA update and class weights (resume is tested end to end in test_train.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import facegender.train as tr
from facegender.train import lr_at


def test_lr_warms_up_linearly_then_follows_the_cosine_or_stays_constant():
    # 100 steps, 10 of warm-up, base 1.0
    assert [lr_at(s, 100, 10, 1.0, "cosine") for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_at(10, 100, 10, 1.0, "cosine") == 1.0  # cosine starts at the base
    assert lr_at(55, 100, 10, 1.0, "cosine") == pytest.approx(0.5)  # half-way: half
    assert lr_at(10 + 90 / 3, 100, 10, 1.0, "cosine") == pytest.approx(0.75)  # (1+cos(pi/3))/2
    assert lr_at(100, 100, 10, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(150, 100, 10, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)  # stays at 0
    assert [lr_at(s, 100, 10, 2.0, "constant") for s in (4, 10, 99)] == [1.0, 2.0, 2.0]
    assert lr_at(0, 100, 0, 1.0, "cosine") == 1.0  # no warm-up
    assert lr_at(50, 100, 0, 1.0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_at(0, 100, 10, 1.0, "step")


def test_should_stop_counts_epochs_since_the_best():
    hist = [{}] * 4
    assert not tr.should_stop(hist, {"epoch": 1}, 0)  # patience 0: never
    assert tr.should_stop(hist, {"epoch": 1}, 2) and not tr.should_stop(hist, {"epoch": 1}, 3)
    assert not tr.should_stop(hist, {"epoch": 3}, 1)
    assert tr.should_stop([{}], {"epoch": -1}, 1)  # no improvement ever yet


def test_patience_stops_the_run_and_keeps_the_best_epoch(tiny_config, tmp_path, monkeypatch):
    losses = iter([0.5, 0.4, 0.45, 0.46, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1])
    real = tr.validate

    def scripted(run):
        return {**real(run), "val_loss": next(losses)}

    monkeypatch.setattr(tr, "validate", scripted)
    log = []
    out = tmp_path / "p"
    tr.train(tiny_config(out, epochs=10, patience=2), log=log.append)
    history = json.loads((out / "history.json").read_text())
    # best at epoch 2; epochs 3 and 4 do not improve, so epoch 5 never runs
    assert [h["val_loss"] for h in history] == [0.5, 0.4, 0.45, 0.46]
    assert any("early stopping" in m for m in log)
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["best"]["epoch"] == 1 and state["epoch"] == 4
    assert json.loads((out / "config.json").read_text())["training"]["epochs_run"] == 4


def test_ema_update_moves_floats_towards_the_model_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    tr.ema_update(ema, model, 0.9)
    for k, v in ema.state_dict().items():
        m = model.state_dict()[k]
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * m)
        else:
            assert torch.equal(v, m), k
    assert int(ema[1].num_batches_tracked) == 7


def test_class_weights_make_both_labels_weigh_the_same_in_the_loss(tiny_config, tmp_path):
    assert tr.positive_weight(np.array([1, 0, 0, 0], np.float32)) == pytest.approx(3.0)
    assert tr.positive_weight(np.array([1, 1, 1, 0], np.float32)) == pytest.approx(1 / 3)
    d = tr.fgdist.from_env()
    plain = tr.setup(tiny_config(tmp_path / "a"), None, lambda m: None, d)
    assert plain.pos_weight is None
    run = tr.setup(tiny_config(tmp_path / "b", class_weights=True), None, lambda m: None, d)
    y_train = run.data.labels[run.data.train_idx]
    assert float(run.pos_weight) == pytest.approx((y_train == 0).sum() / (y_train == 1).sum())
    # the step's loss is the weighted BCE of the batch: female terms count pos_weight times
    idx = run.data.train_idx[:8]
    x = torch.from_numpy(tr.to_batch(run.data.views[0][idx]))
    y = run.data.labels[idx]
    with torch.no_grad():
        run.model.train()
        z = run.model(x)
    w = float(run.pos_weight)
    p = torch.sigmoid(z).numpy()
    expected = -np.mean(w * y * np.log(p) + (1 - y) * np.log(1 - p))
    loss, _hits = tr.train_step(run, x, y, run.data.targets(idx, np.zeros(len(idx), int)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert loss != pytest.approx(
        float(F.binary_cross_entropy_with_logits(z, torch.from_numpy(y))), rel=1e-3
    )


def test_child_smoothing_pulls_only_childrens_targets(tiny_config, tmp_path):
    """--child-smoothing adds to --label-smoothing for faces under 13 and for no one else, and
    the step's loss is the BCE against those per-image targets."""
    from facegender.labels import is_child

    d = tr.fgdist.from_env()
    cfg = tiny_config(tmp_path / "c", label_smoothing=0.1, child_smoothing=0.3)
    run = tr.setup(cfg, None, lambda m: None, d)
    ds = tr.read_data(cfg.data)
    child = np.array([is_child(s) for s in ds.samples])
    assert 0 < child.sum() < len(child)  # ages 1-89: some children, mostly not
    assert np.allclose(run.data.smoothing[child], 0.4)
    assert np.allclose(run.data.smoothing[~child], 0.1)
    idx = run.data.train_idx[:16]
    x = torch.from_numpy(tr.to_batch(run.data.views[0][idx]))
    y, eps = run.data.labels[idx], run.data.smoothing[idx]
    with torch.no_grad():
        run.model.train()
        z = run.model(x)
    target = torch.from_numpy(y * (1 - eps) + 0.5 * eps)
    assert np.allclose(run.data.targets(idx, np.zeros(len(idx), int)), target.numpy())
    loss, _hits = tr.train_step(run, x, y, target.numpy())
    assert loss == pytest.approx(float(F.binary_cross_entropy_with_logits(z, target)), rel=1e-5)


def test_is_child_reads_ages_and_buckets():
    from facegender.data.samples import Sample
    from facegender.labels import is_child

    def s(**kw):
        return Sample("x.jpg", 0, "t", **kw)

    assert is_child(s(age=12)) and not is_child(s(age=13))
    assert is_child(s(age_group="3-9")) and is_child(s(age_group="0-2"))
    assert not is_child(s(age_group="10-19")) and not is_child(s(age_group="more than 70"))
    assert not is_child(s())  # no age known: not counted as a child
