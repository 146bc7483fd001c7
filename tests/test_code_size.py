"""The project's size rule, checked: no function in src/ longer than 80 lines.

A function's length runs from its ``def`` line to its last line (decorators not counted); a
nested function is counted on its own, and its lines are not counted again in the function
around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 80
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _length(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = set(range(fn.lineno, fn.end_lineno + 1))
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, _FUNCTIONS):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines -= set(range(first, node.end_lineno + 1))
    return len(lines)


def long_functions(root: Path = SRC, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function over ``limit`` lines under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, _FUNCTIONS) and (n := _length(node)) > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_in_src_is_over_80_lines():
    assert long_functions() == []


def test_the_check_counts_nested_functions_on_their_own(tmp_path):
    inner = "\n".join(f"        x{i} = {i}" for i in range(85))
    outer = "\n".join(f"    y{i} = {i}" for i in range(70))
    (tmp_path / "m.py").write_text(
        f"def outer():\n{outer}\n    def inner():\n{inner}\n    return inner\n"
        f"def flat():\n{outer}\n{outer}\n"
    )
    assert [f.split()[1] for f in long_functions(tmp_path)] == ["flat", "inner"]
