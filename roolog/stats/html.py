"""`roolog stats --html FILE`: one self-contained page (no network, no script) with the tables and an
inline SVG bar chart of bytes per column, before and after."""

from __future__ import annotations

from html import escape

from .report import human_bytes

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
.before { fill: #d9822b; } .after { fill: #2b7bd9; } .label { font-size: 12px; fill: #222; }
.note { color: #666; }
"""


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    def cells(tag: str, values) -> str:
        return "".join(f'<{tag} class="{"text" if i < text_columns else "num"}">{escape(str(v))}</{tag}>'
                       for i, v in enumerate(values))

    head = cells("th", header)
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar_chart(bars: list[tuple[str, int, int]], before: str, after: str) -> str:
    """Two horizontal bars per label (before, after), scaled to the largest value, as inline SVG."""
    label_w, bar_w, row_h = 220, 640, 34
    height = row_h * len(bars) + 40
    top = max([max(b, a) for _, b, a in bars] or [1]) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 120}" height="{height}" '
             f'role="img" aria-label="bytes per column, {escape(before)} and {escape(after)}">',
             f'<rect class="before" x="{label_w}" y="4" width="12" height="12"/>'
             f'<text class="label" x="{label_w + 18}" y="15">{escape(before)}</text>',
             f'<rect class="after" x="{label_w + 200}" y="4" width="12" height="12"/>'
             f'<text class="label" x="{label_w + 218}" y="15">{escape(after)}</text>']
    for i, (name, b, a) in enumerate(bars):
        y = 30 + i * row_h
        parts.append(f'<text class="label" x="0" y="{y + 16}">{escape(name[:32])}</text>')
        for j, (cls, value) in enumerate((("before", b), ("after", a))):
            w = max(1, round(bar_w * value / top)) if value else 0
            parts.append(f'<rect class="{cls} bar" x="{label_w}" y="{y + j * 14}" width="{w}" height="12">'
                         f"<title>{escape(name)}: {human_bytes(value)}</title></rect>"
                         f'<text class="label" x="{label_w + w + 6}" y="{y + j * 14 + 10}">{human_bytes(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def render_raw(report: dict) -> str:
    ipr, t, e = report["impressions_per_request"], report["totals"], report["on_disk_estimate"]
    body = [f"<p>{report['rows']:,} impressions in {report['requests']:,} requests "
            f"(key {escape(', '.join(report['key']))}). In memory: {human_bytes(t['logical_bytes_impression'])} "
            f"at impression level, {human_bytes(t['logical_bytes_request'])} at request level "
            f"(x{t['dedup_ratio']}).</p>"]
    if e["sample_requests"]:
        body.append(f'<p>On disk: an <b>estimate</b> from a sample of {e["sample_requests"]:,} requests '
                    f'({e["sample_impressions"]:,} impressions, {e["compression"]}): flat '
                    f'{human_bytes(e["flat_bytes"])}, grouped {human_bytes(e["grouped_bytes"])} (x{e["ratio"]}).</p>')
    body.append("<h2>Bytes per column in memory</h2>")
    body.append(bar_chart([(c["name"], c["logical_bytes_impression"], c["logical_bytes_request"])
                           for c in report["columns"]], "impression level", "request level"))
    body.append("<h2>Columns (biggest saving first)</h2>")
    rows = [[c["name"], c["level"], f"{c['varying_requests']:,}", human_bytes(c["logical_bytes_impression"]),
             human_bytes(c["logical_bytes_request"]), f"x{c['dedup_ratio']}", human_bytes(c["saved_bytes"])]
            for c in report["columns"]]
    body.append(_table(["column", "level", "varies in (requests)", "impression level", "request level", "dedup",
                        "saved"], rows, text_columns=2))
    body.append("<h2>Impressions per request</h2>")
    body.append(_table(["min", "median", "mean", "p90", "p99", "max"],
                       [[ipr[k] for k in ("min", "median", "mean", "p90", "p99", "max")]], text_columns=0))
    body.append(_table(["impressions", "requests"],
                       [[f"{b['from']}-{b['to']}", f"{b['requests']:,}"] for b in report["histogram"]]))
    return _page("roolog stats: " + ", ".join(i["path"].rsplit("/", 1)[-1] for i in report["inputs"][:3]),
                 "".join(body))


def render_output(report: dict) -> str:
    t = report["totals"]
    body = [f"<p>{t['requests']:,} requests, {t['impressions']:,} impressions in {t['shards']} shard(s): "
            f"{human_bytes(t['bytes'])} on disk, input {human_bytes(t['input_bytes'])} (x{t['storage_ratio']}).</p>"]
    if report["partition_by"]:
        body.append("<h2>Partitions</h2>")
        body.append(_table(["partition", "requests", "impressions", "on disk", "input", "ratio"],
                           [[p["partition"], f"{p['requests']:,}", f"{p['impressions']:,}", human_bytes(p["bytes"]),
                             human_bytes(p["input_bytes"]), f"x{p['storage_ratio']}"] for p in report["partitions"]]))
    columns: dict[str, list] = {}
    for p in report["partitions"]:
        for c in p["columns"]:
            entry = columns.setdefault(c["name"], [c["level"], 0, 0, 0, 0, 0])
            for i, part in enumerate(("uncompressed_bytes", "compressed_bytes", "values_bytes", "levels_bytes",
                                      "footer_bytes"), 1):
                entry[i] += c[part]
    body.append("<h2>Bytes per column on disk</h2>")
    body.append(bar_chart([(n, u, c) for n, (_, u, c, *_) in columns.items()], "uncompressed", "compressed"))
    body.append(_table(["column", "level", "uncompressed", "compressed", "values", "levels", "footer"],
                       [[n, lv, *map(human_bytes, sizes)] for n, (lv, *sizes) in columns.items()], text_columns=2))
    footers = sum(p["file_footer_bytes"] for p in report["partitions"])
    body.append(f"<p>The footers' own bytes (key-value metadata, row groups' fields): {human_bytes(footers)}. "
                "Levels are the repetition and definition levels of each list column (in v1 pages, measured "
                "compressed on their own).</p>")
    return _page(f"roolog stats: {report['output']}", "".join(body))


def render(report: dict) -> str:
    return render_raw(report) if report["kind"] == "raw" else render_output(report)
