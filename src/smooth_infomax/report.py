"""A self-contained HTML report: tables, figures and audio players in one file that needs no network.

Figures (PNG) and audio (WAV) are embedded as base64 ``data:`` URIs, styles are inline, and there is no
script, so the page opens from disk in any browser, offline. Build it from :class:`Section` objects::

    sections = [Section("Probes", [table(["model", "acc"], [["SIM", "91.2"]]), figure("loss.png", "Loss")])]
    write_report("out/report.html", "smooth-infomax quick run", sections)
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .checkpoint import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;
line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}th,td{border:1px solid #d5dae4;padding:.3rem .6rem;
text-align:right}th{background:#f1f4f9}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.6rem 1rem .6rem 0;vertical-align:top}figure img{max-width:520px;border:1px solid #e3e7ef}
figcaption{font-size:.85rem;color:#4a5368;max-width:520px}.audio{display:inline-block;margin:.4rem 1rem .4rem 0;
font-size:.85rem}.audio audio{display:block;width:260px}pre{background:#f6f8fb;padding:.8rem;overflow:auto;font-size:.8rem}
.note{color:#4a5368;font-size:.9rem}
"""


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)
    note: str = ""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: str | Path, caption: str = "") -> str:
    """An embedded PNG figure (missing files are reported in the page instead of a broken image)."""
    path = Path(path)
    if not path.is_file():
        return f"<p class='note'>figure not available: {esc(path.name)}</p>"
    return (f"<figure><img alt='{esc(caption or path.stem)}' src='{_data_uri(path, 'image/png')}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def audio(path: str | Path, caption: str = "") -> str:
    """An embedded WAV player."""
    path = Path(path)
    if not path.is_file():
        return f"<p class='note'>audio not available: {esc(path.name)}</p>"
    return (f"<div class='audio'>{esc(caption or path.stem)}<audio controls preload='auto' "
            f"src='{_data_uri(path, 'audio/wav')}'></audio></div>")


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def render(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    body = []
    for s in sections:
        body.append(f"<section><h2>{esc(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{esc(s.note)}</p>")
        body.extend(s.parts)
        body.append("</section>")
    sub = f"<p class='note'>{esc(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}"
            + "".join(body) + "</body></html>\n")


def write_report(path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    path = Path(path)
    atomic_write_text(path, render(title, sections, subtitle))
    return path


def fmt_pct(mean: float, std: float | None = None) -> str:
    if std is None:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)
