"""One model reference: every command takes ``--model default|fast|DIR|FILE.onnx`` the same way.

Each command (evaluate with a report, predict, demo, export, serve through its app factory, the
Ray engine's actor) runs with each kind of reference, and a missing model fails with one clear
message and exit code 2 everywhere.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from facegender.checkpoint import FAST_ONNX_FILE, ONNX_FILE
from facegender.cli import cli, example_photos_dir
from facegender.model_ref import BUNDLED, ModelRef, bundled_model_dir, resolve_model

PHOTO = example_photos_dir() / "astronaut.jpg"
KINDS = ("default", "fast", "dir", "file")


@pytest.fixture(scope="module")
def refs(tiny_checkpoint, tmp_path_factory) -> dict[str, str]:
    """``--model`` values of every kind: the bundled names, a checkpoint folder (PyTorch weights,
    no export) and a lone ``.onnx`` file with no checkpoint folder beside it."""
    lone = tmp_path_factory.mktemp("lone") / "exported.onnx"
    shutil.copy(bundled_model_dir() / ONNX_FILE, lone)
    return {"default": "default", "fast": "fast", "dir": str(tiny_checkpoint), "file": str(lone)}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    from facegender.synthetic import write_class_folders

    return write_class_folders(tmp_path_factory.mktemp("ref_faces") / "f", n=24, seed=5, size=64)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_resolver_kinds(refs, tiny_checkpoint):
    default, fast = resolve_model(None), resolve_model("fast")
    assert default == resolve_model("default") and default.name == "default"
    assert default.kind == "checkpoint" and default.folder == bundled_model_dir()
    assert default.graph == bundled_model_dir() / ONNX_FILE and default.weights is not None
    assert fast.folder == bundled_model_dir() and fast.spec == "fast" and fast.graph.is_file()
    d = resolve_model(refs["dir"])
    assert (d.kind, d.folder, d.graph, d.name) == ("checkpoint", Path(tiny_checkpoint), None, None)
    f = resolve_model(refs["file"])
    assert (f.kind, f.folder, f.graph) == ("onnx", None, Path(refs["file"]))
    assert Path(f.spec).is_absolute() and resolve_model(f.spec) == f
    assert resolve_model(f) is f  # a resolved reference passes through
    with pytest.raises(ValueError, match="is an ONNX graph"):
        f.checkpoint_dir()
    assert set(BUNDLED) == {"default", "fast", "accurate"}


def test_fast_is_the_old_graph_while_installed_else_the_defaults_alias(
    tiny_checkpoint, tmp_path, monkeypatch
):
    import facegender.model_ref

    bundled = shutil.copytree(tiny_checkpoint, tmp_path / "bundled")
    monkeypatch.setattr(facegender.model_ref, "bundled_model_dir", lambda: bundled)
    fast, default = resolve_model("fast"), resolve_model(None)
    assert (fast.kind, fast.folder, fast.graph) == (default.kind, default.folder, default.graph)
    assert fast.name == "fast" and default.kind == "checkpoint"
    (bundled / FAST_ONNX_FILE).write_bytes(b"graph")
    fast = resolve_model("fast")
    assert (fast.kind, fast.graph) == ("onnx", bundled / FAST_ONNX_FILE)
    shutil.rmtree(bundled)
    with pytest.raises(FileNotFoundError, match="bundled model 'default' is not there"):
        resolve_model("default")


def test_a_path_wins_over_a_bundled_name(tiny_checkpoint, tmp_path, monkeypatch):
    shutil.copytree(tiny_checkpoint, tmp_path / "fast")
    monkeypatch.chdir(tmp_path)
    ref = resolve_model("fast")
    assert ref.kind == "checkpoint" and ref.name is None and ref.folder == Path("fast")


@pytest.mark.parametrize(
    "bad, words",
    [("nope", "no model at"), ("file", "is not a model"), ("dir", "not a facegender")],
)
def test_missing_model_is_one_clear_error_everywhere(tmp_path, bad, words):
    target = {"nope": tmp_path / "nope", "file": tmp_path / "a.txt", "dir": tmp_path}[bad]
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=words):
        resolve_model(target)
    for cmd in (["evaluate", tmp_path], ["predict", PHOTO], ["demo"], ["export"], ["serve"]):
        res = _run(*cmd, "--model", target)
        assert res.exit_code == 2 and words in res.output, (cmd, res.output)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_with_report(refs, faces, tmp_path, kind):
    out = tmp_path / "report"
    res = _run("evaluate", faces, "--model", refs[kind], "--format", "json", "--no-cache",
               "--report", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["n"] == 24
    assert result["model"]["backend"] == ("torch" if kind == "dir" else "onnx")
    md = (out / "report.md").read_text()
    if kind == "file":  # a lone graph has no training record
        assert "No checkpoint folder" in md
    else:
        folder = resolve_model(refs[kind]).folder
        assert f"Checkpoint: {folder}" in md


@pytest.mark.parametrize("kind", KINDS)
def test_predict_and_demo(refs, tmp_path, kind):
    res = _run("predict", PHOTO, "--model", refs[kind], "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["status"] == "ok" and len(row["faces"]) == 1
    res = _run("demo", "--model", refs[kind], "--out", tmp_path / "demo")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / "two_people.jpg").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_export_where_it_applies(refs, tiny_checkpoint, tmp_path, kind):
    model = refs[kind]
    if kind == "dir":
        model = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")  # export writes into it
    res = _run("export", "--model", model, "--out", tmp_path / "x.onnx")
    if resolve_model(model).kind == "onnx":  # a lone graph (and fast, while it is one)
        assert res.exit_code == 2 and "is an ONNX graph" in res.output
        return
    assert res.exit_code == 0, res.output
    assert resolve_model(tmp_path / "x.onnx").kind == "onnx"


@pytest.mark.parametrize("kind", KINDS)
def test_serve_cli_loads_every_kind(refs, monkeypatch, kind):
    """``facegender serve --model X``: the CLI, the settings handed to the uvicorn workers and
    the app factory each worker runs, with uvicorn itself replaced by a recorder."""
    import uvicorn

    from facegender.serve.app import app_from_env

    for key in ("MODEL", "MAX_BYTES", "CONCURRENCY", "THREADS", "PROCESSES"):
        monkeypatch.setenv(f"FACEGENDER_{key}", "")  # so that the test's end restores them
        monkeypatch.delenv(f"FACEGENDER_{key}")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: started.update(target=target, **kw))
    res = _run("serve", "--model", refs[kind], "--threads", "1")
    assert res.exit_code == 0, res.output
    assert started["target"] == "facegender.serve.app:app_from_env" and started["factory"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(app_from_env()) as client:
        info = client.get("/v1/model").json()
        assert info["backend"] == ("torch" if kind == "dir" else "onnx")
        want = resolve_model(refs[kind])
        assert client.app.state.predictor.classifier.config["model"]["name"] == info["name"]
        if want.graph is not None:
            assert client.app.state.predictor.classifier.path == want.graph.resolve()


@pytest.mark.parametrize("kind", KINDS)
def test_ray_actor_gets_a_spec_any_process_resolves(refs, monkeypatch, tmp_path, kind):
    """The Ray engine resolves once in the driver and hands each actor ``ModelRef.spec``."""
    from facegender.predict_ray import PredictBatch

    spec = resolve_model(refs[kind]).spec
    monkeypatch.chdir(tmp_path)  # an actor may start in another folder
    out = PredictBatch(spec, detect=True, min_face=20, batch_size=8)(
        {"path": ["a.jpg"], "file": [str(PHOTO)]}
    )
    (row,) = [json.loads(s) for s in out["result"]]
    assert row["path"] == "a.jpg" and row["status"] == "ok" and len(row["faces"]) == 1


def test_ray_engine_refuses_a_missing_model_before_starting(tmp_path):
    from facegender.predict_ray import run_predict_ray

    with pytest.raises(FileNotFoundError, match="no model at"):
        run_predict_ray([str(PHOTO)], str(tmp_path / "o.jsonl"), model=str(tmp_path / "nope"))
    assert isinstance(resolve_model("fast"), ModelRef)
