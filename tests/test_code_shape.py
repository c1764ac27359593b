"""The shape of the code: functions that do one job, and the layers kept (``lint-imports``, see pyproject.toml)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustcars"
MAX_BODY_LINES = 60  # a function's body, docstring excluded; a Typer signature's option lines are not its body


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def long_functions(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > MAX_BODY_LINES:
                out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({body_lines(node)} lines)")
    return out


def test_body_lines_counts_the_body_without_its_docstring():
    fn = ast.parse('def f(a,\n      b):\n    """doc\n    more"""\n    x = 1\n\n    return x\n').body[0]
    assert body_lines(fn) == 3


def test_no_function_is_longer_than_60_lines():
    assert long_functions() == []


def test_the_layers_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    r = subprocess.run([exe, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
