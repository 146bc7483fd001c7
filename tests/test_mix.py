"""Mixup and CutMix (facegender.mix): pixels and targets are blended in the same proportion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegender.config import TrainConfig
from facegender.mix import mix_batch


def _faces(n: int = 16, side: int = 12, seed: int = 0):
    """Images whose every pixel equals the image's own target, so a mixed image's mean must
    equal its mixed target whatever the mix did to the pixels."""
    targets = np.random.default_rng(seed).uniform(0.05, 0.95, n).astype(np.float32)
    x = torch.from_numpy(targets).view(n, 1, 1, 1).expand(n, 3, side, side).contiguous()
    return x, targets


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_pixels_and_targets_are_mixed_in_the_same_proportion(mode):
    x, t = _faces()
    mixed, mt = mix_batch(x, t, mode, alpha=1.0, prob=1.0, rng=np.random.default_rng(3))
    assert mt.dtype == t.dtype and mixed.shape == x.shape
    assert not np.allclose(mt, t)  # something was mixed
    np.testing.assert_allclose(mixed.mean(dim=(1, 2, 3)).numpy(), mt, atol=1e-5)
    assert float(mixed.min()) >= float(t.min()) - 1e-6 and float(mixed.max()) <= t.max() + 1e-6


def test_cutmix_pixels_each_come_from_the_image_or_its_partner():
    x, t = _faces()
    mixed, _ = mix_batch(x, t, "cutmix", alpha=1.0, prob=1.0, rng=np.random.default_rng(5))
    known = set(np.round(t, 6))
    kinds = [set(np.round(mixed[i].numpy().ravel(), 6)) for i in range(len(x))]
    assert all(v <= known and len(v) <= 2 for v in kinds)  # no blended pixel, one partner
    assert max(len(v) for v in kinds) == 2  # a box was pasted


def test_none_and_prob_zero_leave_the_batch_alone_and_draws_repeat():
    x, t = _faces()
    rng = np.random.default_rng(0)
    assert mix_batch(x, t, "none", 0.2, 1.0, rng)[0] is x
    out, tt = mix_batch(x, t, "mixup", 0.2, 0.0, rng)
    assert out is x and tt is t
    a = mix_batch(x, t, "cutmix", 0.4, 1.0, np.random.default_rng(9))
    b = mix_batch(x, t, "cutmix", 0.4, 1.0, np.random.default_rng(9))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="unknown mix 'mixer'"):
        mix_batch(x, t, "mixer", 0.2, 1.0, rng)


def test_config_refuses_an_unknown_mix_with_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match="cutmix"):
        TrainConfig(data=["d"], out=str(tmp_path), mix="cutmx")
    with pytest.raises(ValueError, match="mix_alpha"):
        TrainConfig(data=["d"], out=str(tmp_path), mix_alpha=0.0)


def test_a_mixed_run_trains_and_records_its_mix(tiny_config, tmp_path):
    from facegender.train import train

    out = tmp_path / "m"
    train(tiny_config(out, epochs=1, mix="cutmix", mix_prob=1.0), log=lambda _m: None)
    config = json.loads((out / "config.json").read_text())
    assert config["train_args"]["mix"] == "cutmix"
    history = json.loads((out / "history.json").read_text())
    assert np.isfinite(history[0]["train_loss"])
