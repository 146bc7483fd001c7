"""benchmarks/compare.py: the side-by-side rows of bundled_model.py results."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _result(own: float, aligned: float, child_over: float | None) -> dict:
    band = {"ece": 0.1} if child_over is None else {"ece": 0.1, "overconfidence": child_over}
    view = {
        "race_gender": {"Black female": {"accuracy": own - 0.1}, "White male": {"accuracy": own}},
        "age": {"0-2": {"accuracy": 0.5}, "20-29": {"accuracy": own}},
        "ece_by_age": {"0-2": band},
    }
    return {
        "overall_own": {"accuracy": own},
        "overall_aligned": {"accuracy": aligned},
        "sources": {
            "fairface": {
                "own": {**view, "accuracy": own},
                "aligned": {**view, "accuracy": aligned},
            }
        },
    }


def test_rows_and_table_put_results_side_by_side(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("compare")
    a = bench.rows(_result(0.9, 0.88, 0.12))
    assert round(a["fairface predict - own"], 6) == -2.0
    assert a["fairface weakest group"] == "Black female"
    assert round(a["fairface weakest race x gender"], 6) == 80.0
    assert a["fairface age 0-2 over-confidence"] == 0.12
    b = bench.rows(_result(0.95, 0.95, None))  # an older file: no over-confidence
    assert "fairface age 0-2 over-confidence" not in b
    text = bench.table([a, b], ["a", "b"])
    assert "| fairface predict | 88.0 | 95.0 |" in text
    assert "| fairface age 0-2 over-confidence | +0.120 |  |" in text
    files = []
    for name, r in (("a", _result(0.9, 0.88, 0.12)), ("b", _result(0.95, 0.95, None))):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(r))
    out = tmp_path / "cmp.json"
    assert bench.main([*map(str, files), "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"a", "b"}
    assert "| overall own | 90.0 | 95.0 |" in capsys.readouterr().out


def test_a_file_of_another_layout_is_refused_by_name(tmp_path, load_benchmark):
    import pytest

    mod = load_benchmark("compare")
    old = tmp_path / "two_source.json"
    old.write_text(json.dumps({"overall": {"accuracy": 0.95}, "per_source": {}}))
    with pytest.raises(SystemExit, match="two_source.json: not a benchmarks/bundled_model.py"):
        mod.main([str(old), "--json", str(tmp_path / "c.json")])
