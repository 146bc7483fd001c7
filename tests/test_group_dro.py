"""Group DRO (facegender.group_dro): the hard group's weight grows, the loss is the plain mean
until it does, and a run with it trains, records it and refuses a state without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegender.data.samples import Sample
from facegender.group_dro import GroupDRO, group_ids, group_key, prior_shares


def test_groups_are_source_race_gender_and_race_is_left_out_where_unknown():
    a = Sample("a.jpg", 1, "fairface", race="Black")
    b = Sample("b.jpg", 0, "kaggle")
    c = Sample("c.jpg", 0, "fairface", race="Black")
    assert group_key(a) == "fairface/Black/female" and group_key(b) == "kaggle/male"
    ids, names = group_ids([a, b, c, a])
    assert names == ["fairface/Black/female", "fairface/Black/male", "kaggle/male"]
    assert ids.tolist() == [0, 2, 1, 0]


def test_prior_shares_follow_the_draw_weights_or_the_counts():
    ids = np.array([0, 0, 1, 2])
    np.testing.assert_allclose(prior_shares(ids, 3, None), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(prior_shares(ids, 3, np.array([1, 1, 2, 4])), [0.25, 0.25, 0.5])


def test_with_eta_zero_the_loss_is_the_plain_mean_of_any_batch_mix():
    dro = GroupDRO(["a", "b", "c"], np.array([0.2, 0.3, 0.5]), eta=0.0)
    losses = torch.tensor([0.3, 1.2, 0.7, 0.1, 2.0])
    for groups in ([0, 1, 2, 2, 2], [0, 0, 0, 0, 1], [2, 2, 2, 2, 2]):
        assert float(dro.loss(losses, np.array(groups))) == pytest.approx(float(losses.mean()))
    np.testing.assert_allclose(dro.q.numpy(), [0.2, 0.3, 0.5])


def test_the_group_that_stays_hard_gains_weight_and_its_images_pull_harder():
    dro = GroupDRO(["easy", "hard", "absent"], np.array([0.5, 0.25, 0.25]), eta=0.5)
    groups = np.array([0, 0, 1, 1])
    for _ in range(5):
        losses = torch.tensor([0.1, 0.1, 1.0, 1.0], requires_grad=True)
        dro.loss(losses, groups).backward()
    assert float(dro.q.sum()) == pytest.approx(1.0)
    ratio = (dro.q / dro.prior).numpy()
    assert ratio[1] > 1.5 * ratio[0]
    assert ratio[2] < 1.0  # never in a batch: it only loses share to the groups that are
    g = losses.grad.numpy()
    assert g[2] > g[0] and g.sum() == pytest.approx(1.0)  # a weighted mean: weights sum to 1
    assert dro.heaviest(1).startswith("hard x")


def test_state_round_trips_and_a_state_without_group_weights_is_refused():
    dro = GroupDRO(["a", "b"], np.array([0.5, 0.5]), eta=1.0)
    dro.loss(torch.tensor([0.0, 2.0]), np.array([0, 1]))
    again = GroupDRO(["a", "b"], np.array([0.5, 0.5]), eta=1.0)
    again.load(dro.state())
    assert torch.equal(again.q, dro.q)
    with pytest.raises(ValueError, match="no group weights for these 2 groups"):
        again.load({})
    with pytest.raises(ValueError, match="positive prior"):
        GroupDRO(["a", "b"], np.array([1.0, 0.0]), eta=1.0)


def test_a_run_with_group_dro_trains_and_records_the_heaviest_groups(tiny_config, tmp_path):
    from facegender.train import train

    out = tmp_path / "dro"
    train(tiny_config(out, epochs=2, group_dro=0.05), log=lambda _m: None)
    assert json.loads((out / "config.json").read_text())["train_args"]["group_dro"] == 0.05
    history = json.loads((out / "history.json").read_text())
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert "/" in history[-1]["dro_heaviest"] and " x" in history[-1]["dro_heaviest"]
