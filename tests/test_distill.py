"""Distillation (``train --teacher``): the target arithmetic, the teachers' pass over every view,
and the two refusals (other preprocessing; a teacher that trained on the run's validation),
and the pass kept for --resume."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

import facegender.train as tr
from facegender import distill
from facegender.classifier import TorchClassifier
from facegender.distill import check_teacher, soft_targets
from facegender.recipe import read_recipe


@pytest.fixture(scope="module")
def teacher(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "teacher"
    tr.train(tiny_config(out, epochs=1), log=lambda m: None)
    return out


def test_soft_targets_mix_the_smoothed_label_with_the_teacher():
    y = np.array([1.0, 0.0, 1.0], np.float32)
    eps = np.array([0.1, 0.1, 0.5], np.float32)
    assert np.allclose(soft_targets(y, eps, None, 0.5), [0.95, 0.05, 0.75])
    p = np.array([0.2, 0.6, 1.0], np.float32)
    assert np.allclose(soft_targets(y, eps, p, 0.5), [0.575, 0.325, 0.875])
    assert np.allclose(soft_targets(y, eps, p, 1.0), p)  # all teacher
    assert np.allclose(soft_targets(y, eps, p, 0.0), [0.95, 0.05, 0.75])  # all label


def test_student_targets_hold_the_teachers_probability_of_each_view(tiny_config, teacher, tmp_path):
    log = []
    cfg = tiny_config(tmp_path / "s", teacher=[str(teacher)], distill=0.25)
    run = tr.setup(cfg, None, log.append, tr.fgdist.from_env())
    clf = TorchClassifier.load(teacher)
    assert run.data.teacher.shape == (1, len(run.data.labels))
    assert np.allclose(run.data.teacher[0], clf.probabilities(run.data.views[0]), atol=1e-5)
    idx = run.data.train_idx[:10]
    pick = np.zeros(len(idx), int)
    expected = soft_targets(run.data.labels[idx], run.data.smoothing[idx], None, 0) * 0.75
    expected += 0.25 * run.data.teacher[0, idx]
    assert np.allclose(run.data.targets(idx, pick), expected)
    assert any(m.startswith("teachers (1) scored") and "validation accuracy own" in m for m in log)


def test_resume_reads_the_teachers_pass_back_until_a_teacher_changes(
    tiny_config, teacher, tmp_path, monkeypatch
):
    cfg = tiny_config(tmp_path / "s", teacher=[str(teacher)])
    first = tr.setup(cfg, None, lambda m: None, tr.fgdist.from_env()).data.teacher
    assert (tmp_path / "s" / "last" / "teachers.npy").is_file()
    calls = []
    monkeypatch.setattr(distill, "teacher_probabilities", lambda *a, **k: calls.append(a))
    log = []
    again = tr.setup(cfg, None, log.append, tr.fgdist.from_env()).data.teacher
    assert not calls and np.array_equal(first, again)
    assert any("read back from last/" in m for m in log)
    changed = tmp_path / "changed"  # same teacher, other weights: scored again
    shutil.copytree(teacher, changed)
    weights = changed / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(distill, "teacher_probabilities", lambda *a, **k: calls.append(a) or first)
    tr.setup(replace(cfg, teacher=[str(changed)]), None, lambda m: None, tr.fgdist.from_env())
    assert len(calls) == 1


def test_a_teacher_with_other_preprocessing_is_refused(tiny_config, teacher, tmp_path):
    cfg = tiny_config(tmp_path / "s", image_size=20, teacher=[str(teacher)])
    with pytest.raises(ValueError, match="preprocessing .* differs"):
        tr.setup(cfg, None, lambda m: None, tr.fgdist.from_env())


def test_a_teacher_that_trained_on_the_validation_split_is_refused(tiny_config, teacher, tmp_path):
    other_split = tiny_config(tmp_path / "s", seed=1, teacher=[str(teacher)])
    with pytest.raises(ValueError, match="trained on [0-9]+ of this run's [0-9]+ validation"):
        tr.setup(other_split, None, lambda m: None, tr.fgdist.from_env())
    unknown = tmp_path / "no_split"
    shutil.copytree(teacher, unknown)
    (unknown / "validation.csv").unlink()
    pre = tiny_config(tmp_path / "s").preprocess()
    with pytest.raises(ValueError, match="no validation.csv"):
        check_teacher(str(unknown), pre, [])


def test_recipe_teachers_are_relative_to_the_recipe_and_default_stays_bundled(tmp_path):
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.toml"
    recipe.write_text('data = "d"\nteacher = ["../runs/a", "default"]\n')
    got = read_recipe(recipe)["teacher"]
    assert got == [str((tmp_path / "runs" / "a").resolve()), "default"]


def _file_teacher(folder, teacher, rows: dict[str, float]):
    """A probabilities teacher: ``rows`` (path -> P(female)) and ``teacher``'s held-out list."""
    folder.mkdir()
    shutil.copy(teacher / "validation.csv", folder / "validation.csv")
    lines = ["path,p_female"] + [f"{p},{v}" for p, v in rows.items()]
    (folder / "probabilities.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_probabilities_file_teaches_every_view_and_joins_the_mean(tiny_config, teacher, tmp_path):
    cfg = tiny_config(tmp_path / "s", teacher=[str(teacher)])
    run = tr.setup(cfg, None, lambda m: None, tr.fgdist.from_env())
    paths = [s.path for s in tr.prepare_data(cfg, lambda m: None, report=False)[1].samples]
    rng = np.random.default_rng(0)
    given = dict(zip(paths, rng.uniform(0, 1, len(paths)).round(4), strict=True))
    files = _file_teacher(tmp_path / "file", teacher, given)
    both = tr.setup(
        replace(cfg, out=str(tmp_path / "s2"), teacher=[str(teacher), str(files)]),
        None,
        lambda m: None,
        tr.fgdist.from_env(),
    ).data.teacher
    assert np.allclose(
        both, (run.data.teacher + np.array([given[p] for p in paths])) / 2, atol=1e-6
    )


def test_a_probabilities_file_must_score_every_image_and_state_its_split(
    tiny_config, teacher, tmp_path
):
    cfg = tiny_config(tmp_path / "s")
    ds = tr.prepare_data(cfg, lambda m: None, report=False)[1]
    short = _file_teacher(tmp_path / "short", teacher, {s.path: 0.5 for s in ds.samples[1:]})
    cfg = replace(cfg, teacher=[str(short)])
    with pytest.raises(ValueError, match="no row for 1 of the run's"):
        tr.setup(cfg, None, lambda m: None, tr.fgdist.from_env())
    (short / "validation.csv").unlink()
    with pytest.raises(ValueError, match="no validation.csv"):
        tr.setup(cfg, None, lambda m: None, tr.fgdist.from_env())
