"""Progressive resizing: the schedule of training sizes, the batch resize, a run that uses it."""

import json

import pytest
import torch

from facegender.config import TrainConfig
from facegender.progressive import STEP, resize_batch, size_at


def test_off_means_every_epoch_at_full_size():
    assert [size_at(e, 10, 64, 0, 0.75) for e in range(10)] == [64] * 10


@pytest.mark.parametrize("epochs", [1, 2, 5, 16, 30, 45])
@pytest.mark.parametrize("start,until", [(40, 0.75), (48, 0.5), (56, 1.0)])
def test_schedule_grows_in_steps_and_ends_at_full_size(epochs, start, until):
    sizes = [size_at(e, epochs, 64, start, until) for e in range(epochs)]
    assert sizes == sorted(sizes), sizes  # never shrinks
    assert all(start <= s <= 64 for s in sizes)
    assert all(s == start or s % STEP == 0 for s in sizes)
    assert sizes[-1] == 64
    full_from = min(epochs - 1, round(until * epochs))
    assert all(s == 64 for s in sizes[full_from:])


def test_a_30_epoch_schedule_starts_small():
    sizes = [size_at(e, 30, 64, 40, 0.75) for e in range(30)]
    assert sizes[0] == 40 and sizes.count(64) == 8
    assert {40, 48, 56} <= set(sizes)


def test_resize_batch_keeps_a_flat_image_flat():
    x = torch.full((2, 3, 64, 64), 0.3)
    y = resize_batch(x, 48)
    assert y.shape == (2, 3, 48, 48)
    assert torch.allclose(y, torch.full_like(y, 0.3), atol=1e-6)
    assert resize_batch(x, 64) is x


def test_start_at_or_above_the_input_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--progressive-size 64 must be below --image-size 64"):
        TrainConfig(data=[str(tmp_path)], out=str(tmp_path / "o"), progressive_size=64)


def test_a_run_trains_small_first_and_saves_the_full_size(tmp_path, tiny_config):
    from facegender.train import train

    out = tmp_path / "run"
    cfg = tiny_config(
        out,
        epochs=2,
        image_size=24,
        progressive_size=16,
        progressive_until=0.5,
        model="fgnet_s",
        model_kwargs={"widths": [4, 8, 8, 8]},
    )
    train(cfg, log=lambda _m: None)
    history = json.loads((out / "history.json").read_text())
    assert [row["train_size"] for row in history] == [16, 24]
    config = json.loads((out / "config.json").read_text())
    assert config["preprocess"]["image_size"] == 24


def test_a_model_sized_for_one_input_is_refused(tmp_path, tiny_config):
    from facegender.train import train

    cfg = tiny_config(tmp_path / "run", image_size=24, progressive_size=16)  # seed_cnn
    with pytest.raises(ValueError, match="--progressive-size: model 'seed_cnn' is built for 24 px"):
        train(cfg, log=lambda _m: None)
