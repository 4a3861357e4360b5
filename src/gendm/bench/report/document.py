"""The report's document: a block list rendered as Markdown and as one self-contained HTML file,
and the number formats its tables use."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def fmt_ci(point: float | None, lo: float | None, hi: float | None, n: int | None = None, norm=False) -> str:
    f = (lambda v: "n/a" if v is None else f"{v:.3f}") if norm else fmt
    if n == 1:
        return f"{f(point)} (n=1: no CI)"
    text = f"{f(point)} [{f(lo)}, {f(hi)}]"
    return text if n is None else f"{text} (n={n})"


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "…" + text[-limit:]


# ----------------------------------------------------------------------------- document (md + html)
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:0.6em 0}
code{background:#f3f3f3;padding:0 3px} .note{color:#555}
"""


@dataclass
class Document:
    """Tiny block list rendered both as Markdown and as self-contained HTML."""

    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]], details: str | None = None) -> None:
        self.blocks.append(("table", header, rows, details))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self, base: Path) -> str:
        out: list[str] = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                _, header, rows, details = block
                cell = lambda s: one_line(s, 10_000).replace("|", "\\|")  # noqa: E731
                lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
                table = "\n".join(lines)
                if details:
                    table = f"<details><summary>{details}</summary>\n\n{table}\n\n</details>"
                out.append(table)
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1].relative_to(base).as_posix()})")
        return "\n\n".join(out) + "\n"

    @staticmethod
    def _inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{self._inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                out.append(f"<p>{self._inline(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{self._inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                _, header, rows, details = block
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(one_line(c, 10_000))}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                if details:
                    table = f"<details><summary>{html.escape(details)}</summary>{table}</details>"
                out.append(table)
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                out.append(f'<img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">')
        out.append("</body></html>")
        return "\n".join(out) + "\n"
