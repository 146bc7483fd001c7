"""Scale-out: 2-process torchrun training equals 1 process; Ray Data prediction equals local rows.

Both run for real (a torchrun job with the gloo backend, an embedded 2-CPU Ray cluster) on
generated images, so they need no GPU, no data set and no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facegender import distributed as fgdist
from facegender.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# Ray Data warns about its own deprecated settings when it starts; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


# -- training -----------------------------------------------------------------------------------


def test_rank_slices_split_every_batch_like_distributed_sampler():
    from torch.utils.data import DistributedSampler

    order = np.random.default_rng(0).permutation(48)
    world, batch = 4, 12
    for r in range(world):
        d = fgdist.Dist(r, world)
        sampler = list(DistributedSampler(range(48), world, r, shuffle=False))
        assert fgdist.rank_slice(np.arange(48), d).tolist() == sampler
    for i in range(48 // batch):
        step = order[i * batch : (i + 1) * batch]
        parts = [fgdist.rank_slice(step, fgdist.Dist(r, world)) for r in range(world)]
        assert {len(p) for p in parts} == {batch // world}
        assert sorted(np.concatenate(parts).tolist()) == sorted(step.tolist())
    for n in (0, 1, 5, 17):
        bounds = [fgdist.shard_bounds(n, fgdist.Dist(r, 3)) for r in range(3)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    with pytest.raises(ValueError, match="divide evenly"):
        fgdist.check_batch(30, fgdist.Dist(0, 4))


def _train_args(data, out, cache) -> list[str]:
    # seed_cnn has no BatchNorm; without dropout the only randomness is the shared per-epoch
    # order and augmentation, so 2 processes must reproduce 1 up to float summation order.
    return [
        "train", "--data", str(data), "--model", "seed_cnn",
        "--model-kwargs", '{"dropout": 0.0, "widths": [8, 16, 16], "hidden": 32}',
        "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--threads", "1",
        "--rotation", "10", "--shift", "0.08", "--erase", "0.3",
        # fp32: under bf16 autocast (what `auto` picks on an AVX512-BF16 CPU) 1 and 2 processes
        # differ by 5e-3 after one epoch, rounding noise that would hide a real difference
        "--precision", "fp32",
        "--no-progress", "--cache-dir", str(cache), "--out", str(out),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--group-dro", "0.5"]], ids=["plain", "group-dro"])
def test_torchrun_two_processes_train_like_one(synthetic_dirs, tmp_path, extra):
    """Also with --group-dro: its group losses are summed over the ranks before the update, so
    both processes hold the 1-process weights and the loss is the 1-process loss."""
    import torch
    from safetensors.numpy import load_file

    from facegender.models import create_model

    data, cache = synthetic_dirs["utk"], tmp_path / "cache"
    one = CliRunner().invoke(cli, [*_train_args(data, tmp_path / "one", cache), *extra])
    assert one.exit_code == 0, one.output

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facegender", *_train_args(data, tmp_path / "two", cache), *extra]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr.count("validation accuracy") == 1  # rank 0 alone logs

    a = load_file(str(tmp_path / "one" / "last" / "state.safetensors"))
    b = load_file(str(tmp_path / "two" / "last" / "state.safetensors"))
    assert a.keys() == b.keys() and ("dro.q" in a) == bool(extra)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a if k.startswith(("model.", "dro.")))
    assert diff < 1e-5, diff
    # a real run: training moved the weights far more than 1 and 2 processes differ
    torch.manual_seed(0)
    init = create_model("seed_cnn", image_size=16, dropout=0.0, widths=[8, 16, 16], hidden=32)
    moved = max(
        float(np.abs(v.numpy() - a[f"model.{k}"]).max()) for k, v in init.state_dict().items()
    )
    assert moved > 1000 * diff, (moved, diff)
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert h2[0][k] == pytest.approx(h1[0][k], abs=1e-5), k
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["status"] == "final" and cfg["training"]["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


# -- batch prediction on Ray --------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """230 generated faces, 2 real photos with faces, and 2 files that are not images."""
    from facegender.synthetic import write_utkface_folder

    root = tmp_path_factory.mktemp("ray_photos") / "photos"
    write_utkface_folder(root / "faces", n=230, seed=3, size=72)
    more = root / "more"
    more.mkdir()
    for name in ("astronaut.jpg", "two_people.jpg"):
        shutil.copy(ROOT / "examples" / "photos" / name, more / name)
    (more / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (more / "astronaut.jpg").read_bytes()
    (more / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded 2-CPU cluster for the module (the engine reuses a running Ray)."""
    ray = pytest.importorskip("ray", reason="Ray Data is in the test extra: pip install '.[test]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(photo_dir, tmp_path_factory):
    from facegender.predict_io import run_predict

    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    run_predict([str(photo_dir)], fmt="jsonl", out=str(out), recursive=True, workers=0,
                progress=False)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {r["path"]: r for r in rows}


def _same_rows(got: dict, want: dict) -> None:
    """Every field equal; scores and probabilities to their written 4 decimals (1e-4)."""
    assert got.keys() == want.keys()
    for path, w in want.items():
        g = dict(got[path])
        gf, wf = g.pop("faces"), dict(w).pop("faces")
        assert g == {k: v for k, v in w.items() if k != "faces"}, path
        assert [f["box"] for f in gf] == [f["box"] for f in wf], path
        assert [f["gender"] for f in gf] == [f["gender"] for f in wf], path
        for a, b in zip(gf, wf, strict=True):
            assert a["female_probability"] == pytest.approx(b["female_probability"], abs=1e-4)
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.slow
def test_ray_engine_rows_equal_the_local_engine(ray_cluster, photo_dir, local_rows, tmp_path):
    statuses = [r["status"] for r in local_rows.values()]
    assert len(local_rows) == 234 and statuses.count("error") == 2
    assert sum(len(r["faces"]) for r in local_rows.values()) >= 10  # detection really ran
    out = tmp_path / "ray.jsonl"
    args = ["predict", str(photo_dir), "-r", "--engine", "ray", "--workers", "2",
            "--out", str(out), "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == len(local_rows)
    _same_rows({r["path"]: r for r in got}, local_rows)


@pytest.mark.slow
def test_ray_engine_parquet_resumes_from_a_list(ray_cluster, photo_dir, local_rows, tmp_path):
    import pyarrow.parquet as pq

    from facegender.predict_ray import run_predict_ray

    first = sorted(local_rows)[::5]  # a list file of some paths, two of them broken
    first += [p for p in local_rows if "broken" in p or "truncated" in p]
    listing = tmp_path / "todo.txt"
    listing.write_text("# paths to do first\n" + "\n".join(first) + "\n")
    out = tmp_path / "rows.parquet"
    a = run_predict_ray([str(listing)], str(out), workers=2, progress=False)
    assert a["ok"] + a["no_face"] + a["error"] == len(first) and a["error"] == 2
    again = CliRunner().invoke(cli, ["predict", str(photo_dir), "-r", "--engine", "ray",
                                     "--out", str(out), "--no-progress"])  # fmt: skip
    assert again.exit_code == 2 and "--resume" in again.output
    b = run_predict_ray([str(photo_dir)], str(out), recursive=True, workers=2, resume=True,
                        progress=False)  # fmt: skip
    assert b["skipped_done"] == len(first)
    assert b["ok"] + b["no_face"] + b["error"] == len(local_rows) - len(first)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(local_rows)
    _same_rows({r["path"]: r for r in rows}, local_rows)


def test_ray_engine_needs_a_known_output(tmp_path):
    res = CliRunner().invoke(cli, ["predict", str(tmp_path), "--engine", "ray",
                                   "--out", str(tmp_path / "x.txt")])  # fmt: skip
    assert res.exit_code == 2 and ".parquet" in res.output
    res = CliRunner().invoke(cli, ["predict", str(tmp_path), "--engine", "ray"])
    assert res.exit_code == 2 and "--out" in res.output


def test_facegender_imports_no_ray():
    code = "import facegender, facegender.runtime, facegender.cli, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
