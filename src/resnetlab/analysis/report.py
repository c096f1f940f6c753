"""Experiment run folders and their ``report.md``: question, setup, numbers, plots, conclusion.

Every experiment writes the same layout — ``config.json`` (what was asked), raw data as CSV and
JSON, PNG plots, and a ``report.md`` a reader can follow without the code. ``resnetlab report
RUN_DIR`` prints it again (or re-renders it as HTML).
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..utils.env import environment
from ..utils.fileio import atomic_write_text

__all__ = ["setup_facts", "write_csv", "write_json", "write_report", "read_report", "to_html"]


def setup_facts(**extra: Any) -> dict[str, Any]:
    """Machine, versions and date: the evidence that goes with every figure."""
    return environment(**extra)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def write_report(run_dir: Path, *, title: str, question: str, setup: Mapping[str, Any],
                 sections: Iterable[str], conclusion: str, plots: Sequence[str] = ()) -> Path:
    """report.md: question, setup (machine, versions, seed, budget), numbers, plots, conclusion."""
    lines = [f"# {title}", "", "## Question", "", question, "", "## Setup", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in setup.items() if v not in (None, "")]
    lines += ["", "## Results", ""]
    for section in sections:
        lines += [section, ""]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    lines += ["## Conclusion", "", conclusion, ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def read_report(run_dir: str | os.PathLike) -> str:
    path = Path(run_dir)
    path = path / "report.md" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no report.md in {run_dir}: run an experiment there first "
                                "(resnetlab gradflow / degradation / experiment ...)")
    return path.read_text()


def to_html(markdown: str, title: str = "resnetlab report") -> str:
    """A small Markdown-to-HTML rendering (headings, lists, tables, images, code) — no dependency."""
    out, table = [], False
    for line in markdown.splitlines():
        esc = html.escape(line)
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            tag = "th" if not table else "td"
            out += (["<table>"] if not table else []) + ["<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>"
                                                                    for c in cells) + "</tr>"]
            table = True
            continue
        if table:
            out.append("</table>")
            table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1: line.rindex(")")]
            out.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.startswith("- "):
            out.append(f"<li>{esc[2:]}</li>")
        elif line.strip():
            out.append(f"<p>{esc}</p>")
    if table:
        out.append("</table>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(out)}</body></html>"
