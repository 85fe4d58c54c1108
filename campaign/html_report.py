"""`campaign_report.html`: the campaign at a glance, for operators, beside the JSON report.

One static file that needs no network: styles inline, figures as base64 PNG drawn with
matplotlib (Agg, no pyplot state: it is drawn from the campaign's thread), no script. It is
rewritten from the JSON report's own document each time that report is (`Report.write`), so
it is as current as the report, and written whole through a private temporary file in the
same folder (`l2b_mask.atomic_file.replace_file`).

It shows: the counts by state; a map of the products' footprints (lon/lat, no basemap: none
can be fetched) coloured by cloud fraction; the histogram of the cloud fraction; the failures
with their exit codes (and the meaning of each), causes, attempts and logs. The figures' data
are also given as tables, which a reader without the images (and the tests) can check.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from campaign.stac import Footprint, FootprintReader, write_collection
from l2b_mask.atomic_file import replace_file

PAGE_HTML = "campaign_report.html"
STATES = ("done", "skipped", "failed", "pending")  # as campaign.report.STATUSES
BIN_EDGES = tuple(range(0, 101, 10))  # cloud fraction histogram, % of pixels with a value
CLOUD_LABEL = "cloud fraction (% of pixels with a value)"
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee} td.n{text-align:right} img{max-width:100%;height:auto}
tr[data-state=failed] td{color:#a00} .muted{color:#666}
"""


def _cloud(entry: Mapping[str, Any]) -> float | None:
    value = entry.get("cloud_fraction_percent")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def histogram(doc: Mapping[str, Any]) -> list[int]:
    """Acquisitions per cloud-fraction bin ([0, 10), ..., [90, 100]; 100 in the last)."""
    counts = [0] * (len(BIN_EDGES) - 1)
    for entry in doc.get("acquisitions", []):
        value = _cloud(entry)
        if value is not None:
            counts[min(int(value // 10), len(counts) - 1)] += 1
    return counts


def _png(fig: Any) -> str:
    """A matplotlib figure as a data: URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def map_figure(doc: Mapping[str, Any], footprints: Mapping[str, Footprint]) -> str:
    """The footprints on lon/lat axes, filled by cloud fraction (grey outline: none yet)."""
    import matplotlib as mpl
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    cloud = {e["product_stem"]: _cloud(e) for e in doc.get("acquisitions", [])}
    known = [s for s in footprints if cloud.get(s) is not None]
    unknown = [s for s in footprints if cloud.get(s) is None]
    norm, cmap = mpl.colors.Normalize(0.0, 100.0), mpl.colormaps["viridis"]
    if known:
        ax.add_collection(PolyCollection([footprints[s].ring for s in known], cmap=cmap,
                                         norm=norm, array=[cloud[s] for s in known],
                                         edgecolors="black", linewidths=0.4, alpha=0.85))
        # a marker at each centre too: a scene (~75 km) is a speck on a continent's map
        centres = [_centre(footprints[s].ring) for s in known]
        ax.scatter([c[0] for c in centres], [c[1] for c in centres], s=36, marker="o",
                   c=[cloud[s] for s in known], cmap=cmap, norm=norm, edgecolors="black",
                   linewidths=0.5, zorder=3)
    if unknown:
        ax.add_collection(PolyCollection([footprints[s].ring for s in unknown],
                                         facecolors="none", edgecolors="grey", linewidths=0.8))
        centres = [_centre(footprints[s].ring) for s in unknown]
        ax.scatter([c[0] for c in centres], [c[1] for c in centres], s=36, marker="o",
                   facecolors="none", edgecolors="grey", zorder=3)
    fig.colorbar(mpl.cm.ScalarMappable(norm, cmap), ax=ax, label=CLOUD_LABEL)
    if footprints:
        lats = [p[1] for f in footprints.values() for p in f.ring]
        ax.autoscale_view()
        ax.set_aspect(1.0 / max(math.cos(math.radians(sum(lats) / len(lats))), 0.1))
    else:
        ax.text(0.5, 0.5, "no product located yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title(f"{len(footprints)} footprints (to scale, a marker at each centre; "
                 f"{len(unknown)} without a cloud fraction: grey)", fontsize=10)
    ax.grid(True, lw=0.3)
    return _png(fig)


def _centre(ring: Sequence[tuple[float, float]]) -> tuple[float, float]:
    points = ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else ring
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def histogram_figure(counts: Sequence[int]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(BIN_EDGES[:-1], counts, width=10.0, align="edge", color="#4a7ab5", edgecolor="black")
    ax.set_xlim(0, 100)
    ax.set_xlabel(CLOUD_LABEL)
    ax.set_ylabel("acquisitions")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def _row(cells: Sequence[tuple[str, Any]], **attrs: str) -> str:
    attr = "".join(f' data-{k}="{html.escape(v)}"' for k, v in attrs.items())
    tds = "".join(f'<td data-field="{name}"{" class=n" if isinstance(v, int | float) else ""}>'
                  f'{"" if v is None else html.escape(str(v))}</td>' for name, v in cells)
    return f"<tr{attr}>{tds}</tr>"


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"


def _exit_meaning(code: Any) -> str:
    from l2b_mask.errors import ExitCode

    try:
        return ExitCode(int(code)).label
    except (TypeError, ValueError):
        return ""


def failures_table(doc: Mapping[str, Any]) -> str:
    failed = [e for e in doc.get("acquisitions", []) if e.get("status") == "failed"]
    if not failed:
        return '<p id="no-failures">No failures.</p>'
    rows = [_row([("acquisition", e.get("acquisition")), ("exit_code", e.get("exit_code")),
                  ("meaning", _exit_meaning(e.get("exit_code"))), ("cause", e.get("error")),
                  ("attempts", e.get("attempts")), ("retries", e.get("retries")),
                  ("reason", e.get("reason")), ("failure_log", e.get("failure_log"))],
                 stem=str(e.get("product_stem")))
            for e in failed]
    return ('<table id="failures">' + _head("acquisition", "exit code", "meaning", "cause",
                                            "attempts", "retries", "reason", "log")
            + "".join(rows) + "</table>")


def render(doc: Mapping[str, Any], footprints: Mapping[str, Footprint]) -> str:
    """The page's HTML for a campaign report document."""
    totals, campaign = doc.get("totals", {}), doc.get("campaign", {})
    counts = histogram(doc)
    bins = [f"{lo}-{hi}" for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:], strict=True)]
    state_rows = "".join(_row([("state", s), ("count", int(totals.get(s, 0)))], state=s)
                         for s in STATES)
    hist_rows = "".join(_row([("bin", b), ("count", c)], bin=b)
                        for b, c in zip(bins, counts, strict=True))
    when = campaign.get("finished_utc") or "running"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>L2B cloud-mask campaign</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>L2B cloud-mask campaign</h1>",
        f'<p id="summary">Output root <code>{html.escape(str(campaign.get("output_root")))}'
        f'</code>; started {html.escape(str(campaign.get("started_utc")))}, finished '
        f'{html.escape(str(when))}; <span data-field="acquisitions">'
        f'{int(totals.get("acquisitions", 0))}</span> acquisitions, '
        f'{int(totals.get("pge_runs", 0))} PGE runs, {int(totals.get("retries", 0))} retries. '
        f'<span class="muted">Rewritten with campaign_report.json.</span></p>',
        "<h2>By state</h2>", '<table id="counts">', _head("state", "acquisitions"),
        state_rows, "</table>",
        "<h2>Footprints</h2>",
        f'<img id="map" alt="Footprints of {len(footprints)} products, coloured by cloud '
        f'fraction" src="{map_figure(doc, footprints)}">',
        "<h2>Cloud fraction</h2>",
        f'<img id="histogram" alt="Histogram of the cloud fraction" '
        f'src="{histogram_figure(counts)}">',
        '<table id="cloud-histogram">', _head(CLOUD_LABEL, "acquisitions"), hist_rows,
        "</table>",
        "<h2>Failures</h2>", failures_table(doc),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_page(root: Path, doc: Mapping[str, Any], footprints: Mapping[str, Footprint]) -> Path:
    """Write `campaign_report.html` under `root` (whole, link-safe)."""
    return replace_file(root / PAGE_HTML, render(doc, footprints).encode("utf-8"))


def write_views(root: Path, doc: Mapping[str, Any], reader: FootprintReader) -> None:
    """The operators' views of a report just written: this page and the STAC Collection
    (`campaign.stac`), from the same document and footprints."""
    footprints = reader.of_report(doc)
    write_page(root, doc, footprints)
    write_collection(root, doc, footprints)
