"""The shape of the library: small modules, imports in one direction, light commands that stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "safealign"
HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")
MAX_LINES = 500


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside `if TYPE_CHECKING:` blocks: imports for annotations only, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, known: set[str], src: Path = SRC) -> set[str]:
    """The safealign modules `path` imports anywhere (inside functions too), resolved to module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    here = module_name(path, src)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("safealign"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("safealign"):
                continue
            for alias in node.names:  # `from . import io` imports the module safealign.io
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return {m for m in found if m in known and m != here}


def graph(src: Path = SRC) -> dict[str, set[str]]:
    files = sorted(src.rglob("*.py"))
    known = {module_name(p, src) for p in files}
    return {module_name(p, src): imports(p, known, src) for p in files}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle a depth-first walk meets, as the list of modules around it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return cycles


def test_no_module_is_over_500_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


@pytest.mark.integration
def test_no_import_cycles_counting_imports_inside_functions():
    edges = graph()
    assert "safealign.settings" in edges["safealign.jobs.dpo"]  # the walker sees imports
    assert find_cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "safealign"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    edges = graph(pkg)
    assert edges["safealign.a"] == {"safealign.b"} and edges["safealign.b"] == {"safealign.a"}
    assert edges["safealign.c"] == set()  # annotation-only imports never run
    assert find_cycles(edges) == [["safealign.a", "safealign.b", "safealign.a"]]


def _modules_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; return the heavy modules it imported."""
    check = f"{code}\nimport sys\nprint('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY")][-1]
    return ast.literal_eval(line.split(" ", 1)[1])


@pytest.mark.integration
def test_pairs_export_imports_no_torch(tmp_path):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['recipes/pairs.py', 'hydra.run.dir={tmp_path}']\n"
        "runpy.run_path('recipes/pairs.py', run_name='__main__')\n"
    )
    assert _modules_after(code) == []
    assert (tmp_path / "pairs.jsonl").is_file() and (tmp_path / "pair_report.json").is_file()


RECIPES = ["dpo", "sft", "pairs", "evaluate", "compare", "merge", "judge", "pipeline", "iterate"]


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.integration
def test_help_and_a_config_typo_import_no_torch(recipe):
    help_code = (
        "import runpy, sys\n"
        f"sys.argv = ['recipes/{recipe}.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path('recipes/{recipe}.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    assert _modules_after(help_code) == []
    typo = {"dpo": "train.betta=0.1", "sft": "train.learning_ratee=1", "pairs": "objective=multilvel",
            "evaluate": "eval.max_pairz=1", "compare": "sweep_dirr=x", "merge": "combination_typ=cat",
            "judge": "generation=x", "pipeline": "pipeline=modpoo",
            "iterate": "iterate.rulee=lagrangian"}[recipe]  # fmt: skip
    extra = {"evaluate": ["run_dir=x"]}.get(recipe, [])
    out = subprocess.run([sys.executable, f"recipes/{recipe}.py", typo, *extra],
                         capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    assert "safealign: error:" in out.stderr and "Did you mean" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration
def test_a_bad_config_value_fails_before_torch_loads(tmp_path):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['recipes/dpo.py', 'train.learning_rate=abc', 'hydra.run.dir={tmp_path}']\n"
        "try:\n"
        "    runpy.run_path('recipes/dpo.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 1, e.code\n"
    )
    assert _modules_after(code) == []
