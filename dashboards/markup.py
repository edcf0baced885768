"""Markup for the report: one self-contained HTML page (inline CSS, relative image paths, no network).

The page checks itself once loaded: ``<body data-images-ok="N/M" data-errors="[...]">`` records how many
images decoded and every script or resource error, and the footer says the same to the reader. The
headless-browser test reads these attributes from the dumped DOM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

VERDICT_CLASSES = (
    "PASS", "WARN", "FAIL", "ERROR", "stopped: behind the reference", "RUNNING", "INTERRUPTED", "NOT RUN",
    "NOT COMPARABLE", "n/a", "no reference",
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 0; color: #1d1d1f;
       background: #f6f7f9; }
header { background: #1f2933; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #cbd2d9; font-size: 12px; }
nav { padding: 6px 28px; background: #e4e7eb; font-size: 13px; }
nav a { margin-right: 18px; color: #1f2933; }
main { padding: 8px 28px 28px; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 6px; padding: 10px 18px 16px; margin: 16px 0; }
h2 { font-size: 17px; margin: 6px 0 10px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 4px 9px; text-align: right; vertical-align: top; }
th { background: #f0f2f5; position: sticky; top: 0; }
th { text-align: center; }
td:first-child, th:first-child, td.text { text-align: left; }
td:first-child { white-space: nowrap; font-weight: 600; }
td.verdict { font-weight: 600; text-align: center; white-space: nowrap; }
.PASS { background: #d3f2dc; color: #11652d; }
.WARN { background: #fff1c2; color: #7a5200; }
.FAIL, .ERROR, .stopped-behind-the-reference { background: #fbd5d5; color: #9b1c1c; }
.RUNNING, .INTERRUPTED { background: #d6e6ff; color: #1a4fa0; }
.NOT-RUN, .NOT-COMPARABLE, .n-a, .no-reference { background: #eceef1; color: #5f6b7a; }
.small { font-size: 11.5px; color: #5f6b7a; }
.counts span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 10px; font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid > figure { flex: 1 1 480px; max-width: 720px; }
figure { margin: 6px 0; }
figure img { max-width: 100%; border: 1px solid #e4e7eb; }
figcaption { font-size: 12px; color: #5f6b7a; }
.empty { color: #5f6b7a; font-style: italic; }
details summary { cursor: pointer; color: #1a4fa0; margin: 6px 0; }
footer { padding: 0 28px 18px; font-size: 11.5px; color: #5f6b7a; }
"""

# Runs in the page: records resource and script errors, then the image count once everything loaded.
_SELF_CHECK = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target || {};
    errors.push(t.src ? "failed to load " + t.src : String(e.message));
  }, true);
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.setAttribute("data-images-ok", ok + "/" + imgs.length);
    document.body.setAttribute("data-errors", JSON.stringify(errors));
    document.getElementById("self-check").textContent =
      (imgs.length ? ok + " of " + imgs.length + " figures loaded" : "no figures on this page") +
      (errors.length ? "; " + errors.length + " error(s)" : "");
  });
})();
"""


@dataclass(frozen=True)
class Section:
    """A titled block of the page; ``body`` is already-escaped HTML."""

    anchor: str
    title: str
    body: str


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: header, a navigation bar to each section, the sections, the self-check footer."""
    nav = "".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>'
        f"<script>{_SELF_CHECK}</script></head>\n"
        f"<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        '<footer>Self-contained report: open from disk. <span id="self-check"></span></footer></body></html>\n'
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; cells are HTML: a ``<td ...>`` of :func:`text_cell` or :func:`verdict` as is, anything else
    (a number, text passed through :func:`html.escape`) wrapped in a right-aligned ``<td>``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_cell(text: str, title: str = "") -> str:
    """A left-aligned cell; ``title`` becomes the hover text (provenance, full run id)."""
    hover = f' title="{escape(title)}"' if title else ""
    return f'<td class="text"{hover}>{escape(text)}</td>'


def verdict(value: str) -> str:
    """A verdict cell coloured by its class (PASS green, WARN amber, FAIL/ERROR red, RUNNING blue, NOT RUN grey)."""
    return f'<td class="verdict {_css_class(value)}">{escape(value)}</td>'


def verdict_counts(values: Iterable[str]) -> str:
    """One coloured pill per verdict with its count, in a fixed order."""
    values = list(values)
    pills = [
        f'<span class="{_css_class(v)}">{values.count(v)} {escape(v)}</span>' for v in VERDICT_CLASSES if v in values
    ]
    return f'<p class="counts">{"".join(pills)}</p>'


def figure(src: str, caption: str) -> str:
    """An image by relative path, with its caption as alt text too."""
    img = f'<img src="{escape(src)}" alt="{escape(caption)}">'
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def note(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _css_class(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", value)
