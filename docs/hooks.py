"""mkdocs hooks: the op table from ``jacobians.ops.OPS``, and the benchmark plot next to its page.

Imports nothing from mkdocs at module level, so ``tests/test_docs.py`` can test
the table without mkdocs installed.
"""

from __future__ import annotations

import re
from pathlib import Path

OPS_MARKER = "<!-- ops-table -->"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_PNG = ROOT / "benchmarks" / "results.png"


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'") + "`" if text else ""


def ops_table() -> str:
    """Every registered op: name, family, signature, its Jacobian in one line, numpy names with its meaning."""
    import jacobians as jac

    lines = [f"{len(jac.ops.OPS)} ops, by family.", "",
             "| op | family | signature | Jacobian | numpy |", "|---|---|---|---|---|"]
    ops = sorted(jac.ops.OPS.items(), key=lambda kv: (kv[1].family, kv[0]))
    for name, op in ops:
        numpy = ", ".join(f"`numpy.{n}`" for n in op.numpy)
        lines.append(f"| `{name}` | {op.family} | {_cell(f'{name}{op.signature}')} | {_cell(op.formula)} | {numpy} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if OPS_MARKER in markdown:
        return markdown.replace(OPS_MARKER, ops_table())
    return markdown


ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings use Sphinx roles (:func:`x`, :class:`~a.b.C`); show them as code, ``~`` keeping the last name."""
    return ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)


def on_files(files, config):
    """Serve benchmarks/results.png (written by ``python -m benchmarks.run``) as benchmarks/results.png."""
    from mkdocs.structure.files import File

    if RESULTS_PNG.exists():
        files.append(File.generated(config, "benchmarks/results.png", abs_src_path=str(RESULTS_PNG)))
    return files
