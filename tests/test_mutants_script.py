"""scripts/mutants.py: a mutant its test catches is reported caught, one it misses SURVIVED, a snippet no longer
in the source STALE (non-zero exit), the working tree is never modified; and the real table still matches the
source, names existing tests and is the one in docs/TESTING.md."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("mutants_script", REPO / "scripts" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


mutants = _load()

CALC = "def add(a, b):\n    return a + b\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A two-file project: src/fakepkg/calc.py and a test that checks add(2, 3) == 5."""
    (tmp_path / "src" / "fakepkg").mkdir(parents=True)
    (tmp_path / "src" / "fakepkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "fakepkg" / "calc.py").write_text(CALC)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(
        "from fakepkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    return tmp_path


def _mutant(name: str, original: str, replacement: str) -> object:
    return mutants.Mutant(name, "src/fakepkg/calc.py", original, replacement, ("tests/test_calc.py::test_add",),
                          "a fake break")


def test_caught_survived_and_stale_are_reported_and_the_tree_is_untouched(project: Path, capsys) -> None:
    table = [_mutant("minus", "return a + b", "return a - b"),  # add(2, 3) = -1: the test fails
             _mutant("swapped", "return a + b", "return b + a"),  # same sums: the test cannot see it
             _mutant("gone", "return a * b", "return a + b")]  # not in the source
    code = mutants.main(["--timeout", "120"], mutants=table, root=project)
    out = capsys.readouterr().out
    assert code == 1
    rows = {m.group(2): (m.group(1), m.group(3)) for m in re.finditer(r"^\[\s*\d+/3\] (\S+) +\S+s  (\S+) +(.*)$",
                                                                    out, re.MULTILINE)}
    assert rows["minus"] == ("caught", "tests/test_calc.py::test_add")
    assert rows["swapped"][0] == "SURVIVED"
    assert rows["gone"][0] == "STALE"
    assert "baseline" in out and "all 1 listed tests pass on the unmutated source" in out
    assert (project / "src" / "fakepkg" / "calc.py").read_text() == CALC  # mutants live in temporary copies
    # caught alone: exit code 0; a stale snippet alone (no pytest run needed): non-zero
    assert mutants.main(["--only", "minus", "--no-baseline"], mutants=table, root=project) == 0
    assert mutants.main(["--check", "--only", "gone"], mutants=table, root=project) == 1
    assert "STALE" in capsys.readouterr().out


def test_a_failing_baseline_stops_the_run(project: Path) -> None:
    (project / "tests" / "test_calc.py").write_text("def test_add():\n    assert False\n")
    results, _ = mutants.run_all([_mutant("minus", "return a + b", "return a - b")], project, timeout=120,
                                 emit=lambda _line: None)
    assert [r.status for r in results] == ["BASELINE-FAILED"]


def test_every_snippet_of_the_table_is_in_the_source_exactly_once() -> None:
    bad = {m.name: why for m in mutants.MUTANTS for status, why in [mutants.snippet_status(m, REPO)] if status}
    assert not bad, bad
    assert len(mutants.MUTANTS) >= 20
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)


def test_every_listed_test_exists() -> None:
    missing = []
    for m in mutants.MUTANTS:
        assert m.tests, m.name
        for node in m.tests:
            path, _, rest = node.partition("::")
            func = rest.split("[")[0]
            tree = ast.parse((REPO / path).read_text()) if (REPO / path).is_file() else None
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} if tree else set()
            if func not in names:
                missing.append(f"{m.name}: {node}")
    assert not missing, missing


def test_docs_table_is_generated_from_the_mutant_table() -> None:
    text = (REPO / "docs" / "TESTING.md").read_text(encoding="utf-8")
    assert mutants.docs_with_table(text, mutants.MUTANTS) == text, "run `python scripts/mutants.py --write-docs`"
