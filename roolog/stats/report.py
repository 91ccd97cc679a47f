"""The reports as text for people: convert's summary, stats tables, the train verdict (figures: group/figures.py)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_table(rows: Sequence[tuple[str, ...]], text_columns: int = 1) -> list[str]:
    """Aligned columns: the first `text_columns` left-aligned, the numbers after them right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def cell(i: int, value: str) -> str:
        return value.ljust(widths[i]) if i < text_columns else value.rjust(widths[i])

    return ["  ".join(cell(i, v) for i, v in enumerate(r)).rstrip() for r in rows]


def format_summary(report: dict) -> str:
    """A short human summary of a convert run, for stderr."""
    if "partitions" in report:
        return _partitioned_summary(report)
    if report.get("skipped"):
        return "roolog: the output is up to date (same inputs and options); nothing to do (--force redoes it)"
    t = report["totals"]
    ipr = report["impressions_per_request"]
    lines = [
        f"roolog: {t['rows']:,} impressions -> {t['requests']:,} requests in {t['shards']} shard(s), "
        f"{report['wall_seconds']:.1f} s ({report['rows_per_second']:,.0f} rows/s)",
        f"  impressions per request: min {ipr['min']}, median {ipr['median']}, mean {ipr['mean']}, "
        f"p99 {ipr['p99']}, max {ipr['max']}",
        f"  on disk: input {human_bytes(t['input_bytes'])} -> output {human_bytes(t['output_bytes'])} "
        f"(x{t['storage_ratio']}); in memory: {human_bytes(t['logical_bytes_impression'])} -> "
        f"{human_bytes(t['logical_bytes_request'])} (x{t['logical_ratio']})",
    ]
    rows = [("column", "level", "memory before", "memory after", "on disk", "values", "levels", "footer")]
    for c in report["columns"]:
        rows.append((c["name"], c["level"], human_bytes(c["logical_bytes_impression"]),
                     human_bytes(c["logical_bytes_request"]), human_bytes(c["on_disk_bytes"]),
                     human_bytes(c["values_bytes"]), human_bytes(c["levels_bytes"]), human_bytes(c["footer_bytes"])))
    lines += ["  " + line for line in format_table(rows, text_columns=2)]
    lines.append(_where_bytes_go(report["columns"], t["file_footer_bytes"], t["output_bytes"]))
    if report.get("demoted"):
        lines.append(f"  demoted to impression level (varied inside a request): {', '.join(report['demoted'])}")
    if report.get("null_key_rows_dropped"):
        lines.append(f"  rows dropped for a null key: {report['null_key_rows_dropped']:,}")
    return "\n".join(lines)


def _where_bytes_go(columns: list[dict], file_footer: int, total: int) -> str:
    """One line: the output's bytes split into values, levels, page headers and footers."""
    part = {k: sum(c[k] for c in columns) for k in ("values_bytes", "levels_bytes", "page_header_bytes",
                                                    "footer_bytes")}
    footers = part["footer_bytes"] + file_footer

    def share(n: int) -> str:
        return f"{human_bytes(n)} ({_percent(n / total) if total else '-'})"

    rest = total - footers - part["values_bytes"] - part["levels_bytes"] - part["page_header_bytes"]
    return (f"  where the bytes go: values {share(part['values_bytes'])}, repetition/definition levels "
            f"{share(part['levels_bytes'])}, page headers {share(part['page_header_bytes'])}, footers "
            f"{share(footers)}, other {share(rest)} (magic numbers; a count column when no column is per impression)")


def _partitioned_summary(report: dict) -> str:
    t = report["totals"]
    lines = [f"roolog: {t['partitions']} partition(s) by {report['partition_by']}: "
             f"{len(report['converted'])} converted, {len(report['skipped'])} up to date; "
             f"{t['impressions']:,} impressions -> {t['requests']:,} requests, {human_bytes(t['bytes'])}"]
    rows = [("partition", "state", "requests", "impressions", "on disk")]
    for p in report["partitions"]:
        rows.append((p["name"], "up to date" if p["skipped"] else "converted", f"{p['requests']:,}",
                     f"{p['impressions']:,}", human_bytes(p["bytes"])))
    lines += ["  " + line for line in format_table(rows, text_columns=2)]
    if report["cross_partition_requests"]:
        lines.append(f"  requests with rows in more than one partition (kept apart): "
                     f"{report['cross_partition_requests']:,}")
    return "\n".join(lines)


def fit_table(rows: Sequence[tuple[str, ...]], text_columns: int = 1, width: int | None = None) -> list[str]:
    """format_table, with the first column shortened (…) so that lines fit the terminal."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = format_table(rows, text_columns)
    over = max(len(line) for line in lines) - width
    if over > 0:
        keep = max(8, max(len(r[0]) for r in rows) - over)
        rows = [(r[0] if len(r[0]) <= keep else r[0][:keep - 1] + "…", *r[1:]) for r in rows]
        lines = format_table(rows, text_columns)
    return lines


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%" if share >= 0.001 or share == 0 else "<0.1%"


def format_raw_stats(report: dict, width: int | None = None) -> str:
    ipr, t = report["impressions_per_request"], report["totals"]
    lines = [f"roolog stats: {report['rows']:,} impressions in {report['requests']:,} requests "
             f"(key {', '.join(report['key'])})",
             f"  impressions per request: min {ipr['min']}, p50 {ipr['median']}, mean {ipr['mean']}, "
             f"p90 {ipr['p90']}, p99 {ipr['p99']}, max {ipr['max']}"]
    most = max([b["requests"] for b in report["histogram"]] or [1])
    for b in report["histogram"]:
        span = str(b["from"]) if b["from"] == b["to"] else f"{b['from']}-{b['to']}"
        lines.append(f"    {span:>11} | {'#' * max(1 if b['requests'] else 0, round(30 * b['requests'] / most)):<30} "
                     f"{b['requests']:,}")
    rows = [("column", "level", "varies in", "impression level", "request level", "dedup", "saved")]
    for c in report["columns"]:
        rows.append((c["name"], c["level"], _percent(c["varying_share"]), human_bytes(c["logical_bytes_impression"]),
                     human_bytes(c["logical_bytes_request"]), f"x{c['dedup_ratio']}", human_bytes(c["saved_bytes"])))
    rows.append(("total (in memory)", "", "", human_bytes(t["logical_bytes_impression"]),
                 human_bytes(t["logical_bytes_request"]), f"x{t['dedup_ratio']}", human_bytes(t["saved_bytes"])))
    lines += ["  " + line for line in fit_table(rows, 2, (width or shutil.get_terminal_size((120, 24)).columns) - 2)]
    e = report["on_disk_estimate"]
    if e["sample_requests"]:
        lines.append(f"  on disk (an estimate from a sample of {e['sample_requests']:,} requests, "
                     f"{e['sample_impressions']:,} impressions, {e['compression']}): "
                     f"flat {human_bytes(e['flat_bytes'])} -> grouped {human_bytes(e['grouped_bytes'])} "
                     f"(x{e['ratio']})")
    c = report.get("cluster_suggestion")
    if c:
        lines.append(f"  suggestion: --cluster-by {c['column']} ({c['distinct_in_sample']:,} values in the sample's "
                     f"{c['sample_requests']:,} requests): its shards x{c['ratio']} smaller again, "
                     f"{human_bytes(c['grouped_bytes'])} -> {human_bytes(c['clustered_bytes'])} (an estimate)")
    return "\n".join(lines)


def format_output_stats(report: dict, width: int | None = None) -> str:
    t = report["totals"]
    lines = [f"roolog stats {report['output']}: {t['requests']:,} requests, {t['impressions']:,} impressions, "
             f"{t['shards']} shard(s), {human_bytes(t['bytes'])} on disk (input {human_bytes(t['input_bytes'])}, "
             f"x{t['storage_ratio']})"]
    width = (width or shutil.get_terminal_size((120, 24)).columns) - 2
    if report["partition_by"]:
        rows = [("partition", "requests", "impressions", "on disk", "input", "ratio")]
        for p in report["partitions"]:
            rows.append((p["partition"], f"{p['requests']:,}", f"{p['impressions']:,}", human_bytes(p["bytes"]),
                         human_bytes(p["input_bytes"]), f"x{p['storage_ratio']}"))
        rows.append(("total", f"{t['requests']:,}", f"{t['impressions']:,}", human_bytes(t["bytes"]),
                     human_bytes(t["input_bytes"]), f"x{t['storage_ratio']}"))
        lines += ["  " + line for line in fit_table(rows, 1, width)]
        return "\n".join(lines)
    unit = report["partitions"][0]
    columns: list[tuple[str, ...]] = [("column", "level", "compressed", "uncompressed", "values", "levels",
                                       "footer")]
    for c in unit["columns"]:
        columns.append((c["name"], c["level"], *(human_bytes(c[k]) for k in (
            "compressed_bytes", "uncompressed_bytes", "values_bytes", "levels_bytes", "footer_bytes"))))
    lines += ["  " + line for line in fit_table(columns, 2, width)]
    lines.append(_where_bytes_go(unit["columns"], unit["file_footer_bytes"], unit["bytes"]))
    run = unit["report"]
    if run:
        lines.append(f"  the run: {run['totals']['rows']:,} impressions in {run['wall_seconds']} s, in memory "
                     f"x{run['totals']['logical_ratio']}")
    return "\n".join(lines)


def nan_to_none(doc):
    """JSON has no NaN: undefined figures (an AUC with one class only) become null."""
    if isinstance(doc, dict):
        return {k: nan_to_none(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [nan_to_none(v) for v in doc]
    return None if isinstance(doc, float) and math.isnan(doc) else doc


def _figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def format_train_summary(summary: dict) -> str:
    """`roolog train`'s summary for people: what it trained on, eval metrics, speed, the smoke verdict."""
    ev = summary["eval"]
    lines = [f"roolog train: {summary['steps']:,} steps ({summary['layout']} layout, {summary['device']}) "
             f"in {summary['train_seconds']:.1f} s, label {summary['label']}; "
             f"loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}"]
    rows = [("eval", "value"), ("AUC", _figure(ev["auc"])), ("NE", _figure(ev["ne"])),
            ("log loss", _figure(ev["log_loss"])), ("calibration", _figure(ev["calibration"])),
            ("base CTR", _figure(ev["ctr"])), ("impressions", f"{ev['impressions']:,}"),
            ("impressions/s", _figure(summary["impressions_per_s"], 0)),
            ("requests/s", _figure(summary["requests_per_s"], 0))]
    lines += ["  " + line for line in format_table(rows)]
    skipped = summary["features"]["skipped"]
    if skipped:
        lines.append(f"  not used (type without a feature form): {', '.join(skipped[:8])}"
                     + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""))
    if summary.get("smoke"):
        verdict = summary["smoke"]
        outcome = "passed" if verdict["passed"] else "FAILED: " + "; ".join(verdict["failures"])
        lines.append(f"  smoke check: {outcome}")
    if summary.get("saved"):
        lines.append(f"  model saved to {summary['saved']}")
    return "\n".join(lines)
