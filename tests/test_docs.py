"""The documentation's code runs: every ```python block of docs/**/*.md, in order, one namespace per page.

A line ending in ``# -> VALUE`` is a check: the statement must be an
expression, and its value must equal ``VALUE`` (evaluated in the page's
namespace; tuples, lists and arrays compared element by element).  A block
whose first line is ``# requires: dask, zarr`` runs only where those import (the
page stops there otherwise: later blocks may build on it).  Needs
neither mkdocs nor matplotlib: the suite installs only ``.[test]``.  The op
table of the API reference is generated from ``jacobians.ops.OPS`` by
``docs/hooks.py`` at build time; its generator is tested here too.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import linecache
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

import jacobians as jac

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
CHECK = "# ->"
REQUIRES = re.compile(r"#\s*requires:\s*([\w, ]+)")   # a block's first line: the optional modules it needs


def blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks with the line each starts on; a fence the runner would miss is an error."""
    text = page.read_text(encoding="utf-8")
    found = [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]
    opened = len(re.findall(r"```python", text))
    assert opened == len(found), (f"{page.relative_to(ROOT)}: {opened} ```python fences but {len(found)} at "
                                  f"column 0 with a closing fence; indented blocks would not be run")
    return found


def checks(source: str) -> dict[int, str]:
    """Line number -> expected-value text of the ``# -> VALUE`` comments of a block."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith(CHECK):
            out[tok.start[0]] = tok.string[len(CHECK):].strip()
    return out


def same(actual, expected) -> bool:
    if isinstance(actual, np.ndarray) or isinstance(expected, np.ndarray):
        return np.shape(actual) == np.shape(expected) and bool(np.all(np.asarray(actual) == np.asarray(expected)))
    if isinstance(actual, (tuple, list)) and isinstance(expected, (tuple, list)):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    return bool(actual == expected)


def remember(filename: str, source: str) -> None:
    """Let tracebacks and ``inspect.getsource`` read the page's code (functions defined on a page)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def page_code(page: Path) -> str:
    """The page with every line outside its python blocks blanked: line numbers stay the page's."""
    lines = [""] * (page.read_text(encoding="utf-8").count("\n") + 1)
    for start, source in blocks(page):
        for k, line in enumerate(source.splitlines()):
            lines[start - 1 + k] = line
    return "\n".join(lines) + "\n"


def run_block(source: str, filename: str, ns: dict, first_line: int = 1) -> int:
    """Run one block statement by statement; returns how many ``# ->`` checks it made."""
    source = "\n" * (first_line - 1) + source      # errors name the page's own line numbers
    if filename not in linecache.cache:
        remember(filename, source)
    tree = ast.parse(source, filename)
    expected = checks(source)
    text = source.splitlines()
    done, used = 0, set()
    for stmt in tree.body:
        last = stmt.end_lineno
        if last + 1 in expected and text[last].lstrip().startswith(CHECK):
            last += 1      # a check on its own line belongs to the statement above it
        lines = [n for n in expected if stmt.lineno <= n <= last]
        used.update(lines)
        if not lines:
            exec(compile(ast.Module([stmt], []), filename, "exec"), ns)
            continue
        assert len(lines) == 1 and isinstance(stmt, ast.Expr), (
            f"{filename}:{lines[0]}: a '{CHECK}' comment must end a single expression statement")
        value = eval(compile(ast.Expression(stmt.value), filename, "eval"), ns)
        want = eval(expected[lines[0]], ns)
        assert same(value, want), f"{filename}:{lines[0]}: {ast.unparse(stmt)} is {value!r}, the page says {want!r}"
        done += 1
    stray = sorted(set(expected) - used)
    assert not stray, f"{filename}:{stray[0]}: a '{CHECK}' comment that follows no expression"
    return done


@pytest.fixture(autouse=True)
def _keep_memory_limit():
    before = jac.memory_limit()
    yield
    jac.set_memory_limit(before)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_code_runs(page):
    ns: dict = {"__name__": "docs_" + page.stem}
    filename = f"docs/{page.relative_to(DOCS)}"
    remember(filename, page_code(page))
    for start, source in blocks(page):
        needs = REQUIRES.match(source)
        missing = [m for m in (needs.group(1).replace(",", " ").split() if needs else ())
                   if importlib.util.find_spec(m) is None]
        if missing:   # an optional extra's block (and every later one: they may build on it)
            pytest.skip(f"{filename} line {start}: needs {', '.join(missing)} (an optional extra)")
        run_block(source, filename, ns, first_line=start)


def test_pages_exist_and_have_code():
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    for name in ("index.md", "researchers.md", "teaching.md", "benchmarks.md",
                 "api/jacobians.md", "api/ops.md", "api/testing.md"):
        assert name in names
    for name in ("index.md", "researchers.md", "teaching.md"):
        page = DOCS / name
        assert blocks(page), f"{name} has no python blocks"
        assert sum(len(checks(src)) for _, src in blocks(page)) >= 5, f"{name} checks too few values"


def test_a_wrong_check_fails_and_a_check_on_an_assignment_is_refused():
    ns: dict = {}
    assert run_block("x = (2, 3)\nx  # -> (2, 3)\n", "good", ns) == 1
    with pytest.raises(AssertionError, match=r"is \(2, 3\), the page says \(3, 2\)"):
        run_block("x  # -> (3, 2)\n", "bad", ns)
    with pytest.raises(AssertionError, match="single expression statement"):
        run_block("y = 1  # -> 1\n", "assign", ns)
    assert run_block("x\n# -> (2, 3)\n", "next line", ns) == 1
    with pytest.raises(AssertionError, match="is \\(2, 3\\), the page says 5"):
        run_block("x\n# -> 5\n", "next line, wrong", ns)
    with pytest.raises(AssertionError, match="follows no expression"):
        run_block("x\n\n# -> (2, 3)\n", "stray", ns)


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_op_table_lists_every_op_with_family_signature_and_formula():
    table = _hooks().ops_table()
    rows = [l for l in table.splitlines() if l.startswith("| `")]
    assert len(rows) == len(jac.ops.OPS)
    for name, op in jac.ops.OPS.items():
        row = next(r for r in rows if r.startswith(f"| `{name}` |"))
        assert op.family in row and op.formula in row and f"{name}{op.signature}" in row


def test_op_table_replaces_its_marker_only():
    hooks = _hooks()
    page = (DOCS / "api" / "ops.md").read_text(encoding="utf-8")
    assert page.count(hooks.OPS_MARKER) == 1
    out = hooks.on_page_markdown(page, page=None, config=None, files=None)
    assert hooks.OPS_MARKER not in out and "| `linear` |" in out
    assert hooks.on_page_markdown("no marker", page=None, config=None, files=None) == "no marker"


def test_benchmarks_page_includes_the_generated_results_not_a_copy():
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert '--8<-- "benchmarks/results.md"' in page
    assert "| problem |" not in page      # the numbers come from the file the benchmark run writes


def test_sphinx_roles_of_docstrings_render_as_code():
    hooks = _hooks()
    html = "see :func:<code>jacobians.jacobian</code> and :class:<code>~jacobians.explain.ExplainError</code>"
    assert hooks.on_page_content(html, page=None, config=None, files=None) == (
        "see <code>jacobians.jacobian</code> and <code>ExplainError</code>")
