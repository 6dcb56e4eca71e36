"""Render report sections to Markdown, self-contained HTML and CSV files.

Consumes: a list of :class:`Section` (title + blocks: :class:`Text`, :class:`Bullets`,
:class:`Table`, :class:`Figure`) and the directory holding the figures. Produces
``report.md`` (figures linked as files), ``report.html`` (figures embedded as base64 PNG,
inline CSS, no external resource of any kind) and one CSV per table with a ``csv`` name.
Guarantees: the same sections and numbers in both formats; CSVs keep full precision, the
displayed tables follow :mod:`finscale.formatting` (4 significant digits, counts with
thousands separators, the CLI's rule).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finscale.formatting import cell, interval


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    csv: str | None = None        # file name under tables/ (None: not exported)
    shown: pd.DataFrame | None = None   # what the document displays (default: ``frame``)
    show: bool = True             # False: exported as CSV only, the document links it

    @property
    def display(self) -> pd.DataFrame:
        return self.frame if self.shown is None else self.shown


@dataclass
class Figure:
    path: Path                    # relative to the report directory
    caption: str = ""


Block = Text | Bullets | Table | Figure  # what a section is made of


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.title)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def fmt_cell(value) -> str:
    """A displayed table cell: :func:`finscale.formatting.cell`, the rule CLI tables use too."""
    return cell(value)


def with_ci(frame: pd.DataFrame, metric: str, lo: str | None = None, hi: str | None = None) -> pd.Series:
    """'mean [lo, hi]' strings for display."""
    lo, hi = lo or f"{metric}_lo", hi or f"{metric}_hi"

    def one(r) -> str:
        ci = interval((r[lo], r[hi]), fmt_cell, missing="")
        return f"{fmt_cell(r[metric])} {ci}" if ci else fmt_cell(r[metric])
    return frame.apply(one, axis=1) if not frame.empty else pd.Series(dtype=object)


def ci_text(frame: pd.DataFrame, lo: str, hi: str) -> pd.Series:
    """'[lo, hi]' strings ('' where the interval is missing)."""
    return frame.apply(lambda r: interval((r[lo], r[hi]), fmt_cell, missing=""), axis=1)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).apply(lambda col: col.map(fmt_cell))


# --------------------------------------------------------------------------- Markdown

def _md_table(frame: pd.DataFrame) -> str:
    shown = display_frame(frame)
    esc = [[str(c).replace("|", "\\|") for c in row] for row in shown.itertuples(index=False)]
    head = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(r) + " |" for r in esc])


def _md_block(block) -> str:
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        where = f" (`tables/{block.csv}`)" if block.csv else ""
        if not block.show:
            return f"{block.caption}: not shown here, see {where.strip(' ()') or 'the CSV'}."
        if block.display.empty:
            return f"*{block.caption}*: no rows." if block.caption else ""
        body = _md_table(block.display)
        return f"*{block.caption}*{where}\n\n{body}" if block.caption else body
    if isinstance(block, Figure):
        return f"![{block.caption}]({block.path.as_posix()})\n\n*{block.caption}*"
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(title: str, sections: list[Section], lead: list | None = None) -> str:
    """``lead``: blocks shown before the contents (the answer and the headline figure)."""
    parts = [f"# {title}", *(_md_block(b) for b in lead or []), "## Contents",
             "\n".join(f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1))]
    for s in sections:
        parts.append(f"## {s.title}")
        parts += [_md_block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
.scroll{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top;white-space:normal;
max-width:28em;overflow-wrap:break-word}
th{overflow-wrap:normal;word-break:normal;hyphens:none}
td.num{text-align:right;white-space:nowrap}
th{background:#f2f2f2}caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}img{max-width:100%}figcaption{font-style:italic;font-size:13px}
code{background:#f4f4f4;padding:0 3px}
section#findings{background:#f7f9fc;border:1px solid #cdd7e5;padding:0 1em 1em}
section#answer{background:#fffbea;border:1px solid #e6d690;padding:.2em 1em}
section#answer p:first-child{font-size:17px;font-weight:600}
section#answer figure{margin:.4em 0}
"""


NUM_CLASS = ' class="num"'


def _is_number(value) -> bool:
    return not isinstance(value, (bool, str)) and isinstance(value, (int, float)) or \
        (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iuf")


def inline(text: str) -> str:
    """Escaped text with `code spans` as <code> (the report's texts quote commands that way)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _header(name) -> str:
    """A column header that wraps only between words or after an underscore, never mid-word."""
    return html.escape(str(name)).replace("_", "_<wbr>")


def _html_rows(frame: pd.DataFrame) -> str:
    """Table rows: text left-aligned and wrapped, numbers right-aligned (class ``num``)."""
    head = "".join(f"<th>{_header(c)}</th>" for c in frame.columns)
    rows = []
    for raw in frame.itertuples(index=False):
        cells = "".join(f"<td{NUM_CLASS if _is_number(v) else ''}>{html.escape(fmt_cell(v))}</td>"
                        for v in raw)
        rows.append(f"<tr>{cells}</tr>")
    return f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"


def _html_table(block: Table) -> str:
    where = f" (<code>tables/{html.escape(block.csv)}</code>)" if block.csv else ""
    if not block.show:
        return f"<p>{html.escape(block.caption)}: not shown here, see {where.strip(' ()') or 'the CSV'}.</p>"
    frame = block.display
    if frame.empty:
        return f"<p><em>{html.escape(block.caption)}</em>: no rows.</p>" if block.caption else ""
    caption = f"<caption>{inline(block.caption)}{where}</caption>" if block.caption else ""
    return f'<div class="scroll"><table>{caption}{_html_rows(frame)}</table></div>'


def _html_block(block, root: Path) -> str:
    if isinstance(block, Text):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
        alt = html.escape(block.caption)
        return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{alt}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(title: str, sections: list[Section], root: Path, lead: list | None = None) -> str:
    """``lead``: blocks on the first screen, before the contents (``<section id="answer">``)."""
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if lead:
        body.append('<section id="answer">' + "".join(_html_block(b, root) for b in lead) + "</section>")
    body.append(f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>")
    for s in sections:
        inner = "".join(_html_block(b, root) for b in s.blocks)
        body.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{inner}</section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


# --------------------------------------------------------------------------- files

def write_tables(sections: list[Section], folder: Path) -> list[Path]:
    """Every table with a ``csv`` name, at full precision."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Table) and b.csv:
                path = folder / b.csv
                b.frame.to_csv(path, index=False)
                written.append(path)
    return written
