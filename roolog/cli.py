"""The `roolog` command: a thin Click layer over roolog.convert and roolog.explode."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import signal
import sys
import time

import click
import pyarrow as pa

from .errors import RoologError, UsageProblem
from .log import EventLog
from .read.arrow_types import TYPE_EXAMPLES, parse_type
from .read.sources import FORMATS, ReadOptions
from .read.stores import parse_storage_options
from .run.driver import convert as run_convert
from .run.explode import explode as run_explode
from .stats.html import render as render_html
from .stats.report import format_output_stats, format_raw_stats, format_summary, format_train_summary, nan_to_none
from .stats.statistics import infer_schema, stats_raw
from .stats.statistics import stats as run_stats
from .version import __version__
from .write.checks import verify as run_verify
from .write.manifest import LEDGER, MANIFEST
from .write.outdir import reading


class Size(click.ParamType):
    """A byte size such as 512MB, 1GB, 1.5GiB or 1000000."""

    name = "size"
    _units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
        if not m:
            self.fail(f"{value!r} is not a size like 512MB or 2GB", param, ctx)
        size = int(float(m.group(1)) * self._units[m.group(2)])
        if size < 1:
            self.fail(f"{value!r} is not a positive size (such as 512MB)", param, ctx)
        return size


def _fail_cleanly(fn):
    """User mistakes and bad data: one line on stderr and the exit code from DESIGN.md, no traceback.
    With --log-format json that line is a JSON event too."""

    def fail(message: str, code: int) -> None:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.params.get("log_format") == "json":
            click.echo(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": "error",
                                   "message": message, "exit_code": code}), err=True)
        else:
            click.echo(f"roolog: error: {message}", err=True)
        sys.exit(code)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RoologError as err:
            fail(str(err), err.exit_code)
        except OSError as err:
            if err.errno == errno.ENOSPC:  # say where: the device of the output (or of explode's target)
                where = kwargs.get("target") or kwargs.get("out") or "the output"
                fail(f"no space left on the device that holds {where}; free some space or write elsewhere, then "
                     "run again", 1)
            fail(str(err).strip().splitlines()[0], 1)
        except pa.ArrowException as err:  # data pyarrow could not read
            fail(str(err).strip().splitlines()[0], 1)
        except KeyboardInterrupt:
            out = kwargs.get("out")
            if out is None:
                fail("interrupted", 130)
            elif not os.path.exists(out):
                fail(f"interrupted; nothing was kept ({out} was not created)", 130)
            elif os.path.exists(os.path.join(out, MANIFEST)):
                fail(f"interrupted; {out} holds the output it held before this run", 130)
            else:
                fail(f"interrupted; {out} was left unfinished (no {MANIFEST}): run again to finish it", 130)

    return wrapper


class ColumnType(click.ParamType):
    """COL=TYPE: a column and an Arrow type name (the column name may itself hold '=')."""

    name = "col=type"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        for i, ch in enumerate(value):
            if ch == "=" and i:
                try:
                    parse_type(value[i + 1:])
                except UsageProblem:
                    continue
                return value[:i], value[i + 1:].strip()
        self.fail(f"{value!r} is not COL=TYPE with an Arrow type such as {TYPE_EXAMPLES}", param, ctx)


def reading_options(fn):
    """The options every command that reads raw logs shares; the command gets them as one `read`."""
    options = [
        click.option("--key", "key", multiple=True, metavar="COL",
                     help="Request key column; repeat for a composite key."),
        click.option("--order-by", metavar="COL", help="Order impressions within a request by this column."),
        click.option("--input-format", type=click.Choice(["auto", *FORMATS]), default="auto", show_default=True,
                     help="Input format; auto detects it from the file name (.csv, .tsv, .jsonl, .parquet)."),
        click.option("--delimiter", metavar="C", help="CSV/TSV field separator (default , or tab)."),
        click.option("--null-value", "null_values", multiple=True, metavar="S",
                     help="A CSV/TSV string read as null; repeatable."),
        click.option("--column-type", "column_types", multiple=True, type=ColumnType(), metavar="COL=TYPE",
                     help="Read a CSV/TSV/JSONL column as this Arrow type (string, int64, decimal128(20, 2), "
                          "timestamp[ms], ...) instead of inferring it; repeatable."),
        click.option("--newlines-in-values", is_flag=True,
                     help="Quoted CSV values may hold line breaks anywhere in the file (found by itself when "
                          "one is in the first 32 MB)."),
        click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                     help="An option of the object store's fsspec file system for s3://, gs://, ... inputs "
                          "(requester_pays=true, ...); repeatable. Credentials come from the store's environment."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, input_format, delimiter, null_values, column_types, newlines_in_values, storage_options,
                **kwargs):
        read = ReadOptions(input_format=input_format, delimiter=delimiter, null_values=tuple(null_values),
                           column_types=tuple(column_types), newlines_in_values=newlines_in_values,
                           storage_options=parse_storage_options(storage_options))
        return fn(*args, read=read, **kwargs)

    wrapper = _fail_cleanly(wrapper)  # a meaningless reading option is one line too
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="roolog")
def main() -> None:
    """roolog: store and train on recommendation logs one row per request.

    Impression-level logs repeat every request-level value (user, context, history) on every item shown.
    `roolog convert` writes one row per request instead, losslessly; `roolog explode` proves it.
    """
    # a scheduler's SIGTERM unwinds like Ctrl-C: temp files go, nothing is left looking finished
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="Output folder for the shards.")
@reading_options
@click.option("--schema", "schema_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Schema TOML declaring request/impression columns (trusted, but checked).")
@click.option("--shards", type=click.IntRange(1, 100000), help="Number of output shards [default: from input size].")
@click.option("--compression-level", type=click.IntRange(1, 22), default=3, show_default=True,
              help="zstd level of the shards.")
@click.option("--row-group-requests", type=click.IntRange(1), metavar="N",
              help="At most N requests per Parquet row group, so data loaders can split a shard finely "
                   "[default: row groups of about 64 MB].")
@click.option("--on-conflict", type=click.Choice(["error", "demote"]), default="error", show_default=True,
              help="When a declared request-level column varies inside a request: fail, or store it as a list.")
@click.option("--drop-null-keys", is_flag=True, help="Skip rows whose key is null (counted in the report).")
@click.option("--memory-limit", type=Size(), default="1GB", show_default=True,
              help="Memory for grouping scattered requests; bounds each spill partition.")
@click.option("--partition-by", metavar="COL",
              help="One output partition OUT/COL=value/ per value: a hive folder key or a column "
                   "[default: the top-level hive folder key of partitioned inputs].")
@click.option("--cluster-by", "cluster_by", multiple=True, metavar="COL",
              help="Put requests with the same COL (a user or session id; repeatable) in one shard, next to "
                   "each other: their repeated histories then compress away.")
@click.option("--force", is_flag=True, help="Redo outputs that are up to date (same inputs and options).")
@click.option("--overwrite", is_flag=True, help="Write into a folder that holds files roolog did not write.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="Group on this machine, or with Spark tasks (the spark extra): the same output.")
@click.option("--spark-master", metavar="URL",
              help="Spark master for --engine spark [default: local[*], or the session spark-submit started].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Events on stderr as text, or as one JSON object per line for a scheduler.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, no summary, no text events (for cron).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's report as one JSON object on stdout.")
@_fail_cleanly
def convert(inputs, out, key, order_by, read, schema_file, shards, compression_level, row_group_requests,
            on_conflict, drop_null_keys, memory_limit, partition_by, cluster_by, force, overwrite, engine,
            spark_master, log_format, quiet, as_json):
    """Convert impression-level logs to request-level Parquet shards.

    INPUT is a file, a folder (hive key=value folders become columns) or a glob, in Parquet, CSV, TSV or
    JSON lines, plain or .gz/.zst, on local disk or in an object store (s3://bucket/prefix/, gs://, ...;
    credentials from the store's environment). Without --schema, a column is request-level iff it holds one
    value in every request.

    \b
    Examples:
      roolog convert sample_data/impressions.parquet -o out --key request_id --order-by position
      roolog convert logs/ -o out --key request_id --cluster-by user_id
      roolog convert s3://bucket/impressions/ -o out --key request_id
      roolog convert logs/ -o out --key request_id --engine spark --spark-master spark://host:7077
    """
    if spark_master and engine != "spark":
        raise UsageProblem("--spark-master needs --engine spark")
    report = run_convert(list(inputs), out, key=tuple(key), order_by=order_by, schema_file=schema_file, read=read,
                         shards=shards, compression_level=compression_level, on_conflict=on_conflict,
                         row_group_requests=row_group_requests, memory_limit=memory_limit,
                         partition_by=partition_by, cluster_by=cluster_by, force=force, overwrite=overwrite,
                         drop_null_keys=drop_null_keys, progress=not quiet and log_format == "text",
                         log=EventLog(log_format, quiet), engine=engine, spark_master=spark_master)
    if as_json:
        click.echo(json.dumps(report))
    if not quiet and log_format == "text":
        click.echo(format_summary(report), err=True)


@main.command()
@click.argument("out", metavar="OUT")
@click.option("-o", "--output", "target", required=True, metavar="FILE.parquet", help="Impression-level file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@_fail_cleanly
def explode(out, target, as_json):
    """Turn a converted OUT back into impression rows (the exact inverse of convert).

    \b
    Example:
      roolog explode out -o impressions.parquet
    """
    summary = run_explode(out, target)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"roolog: wrote {summary['rows']:,} impression rows to {target}", err=True)


@main.command()
@click.argument("out", metavar="OUT")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object on stdout.")
@_fail_cleanly
def verify(out, as_json):
    """Check every shard of a converted OUT against its manifest (size and xxh64): exit 0 when all match,
    1 (with one line per problem) when any is missing, replaced or corrupted.

    \b
    Example (cron, after convert):
      roolog verify out || mail -s "roolog output damaged" team@example.com
    """
    with reading(out):
        verdict = run_verify(out)
    if as_json:
        click.echo(json.dumps(verdict))
    elif verdict["ok"]:
        click.echo(f"roolog: {out}: {verdict['shards']:,} shard(s) match the manifest", err=True)
    for problem in [] if as_json else verdict["problems"]:
        click.echo(f"roolog: {problem}", err=True)
    if not verdict["ok"]:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@reading_options
@click.option("--memory-limit", type=Size(), default="1GB", show_default=True,
              help="Memory for grouping scattered requests.")
@click.option("--json", "as_json", is_flag=True, help="Every figure as one JSON object on stdout (for monitoring).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write a self-contained HTML page with the tables and a bar chart.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_fail_cleanly
def stats(paths, key, order_by, read, memory_limit, as_json, html_file, quiet):
    """How much duplication a log holds: on raw logs before converting, or on a converted OUT.

    On raw logs (every format convert reads; --key required) nothing is written: per column its level, the
    share of requests it varies in, its bytes at impression and at request level, and an on-disk estimate
    from a sample of whole requests. On a converted OUT only manifests and Parquet footers are read.

    \b
    Examples:
      roolog stats sample_data/impressions.parquet --key request_id
      roolog stats 's3://bucket/impressions/ds=2026-12-01/*.parquet' --key request_id
      roolog stats out --json
    """
    report = run_stats(list(paths), tuple(key), order_by=order_by, read=read, memory_limit=memory_limit,
                       progress=not quiet)
    if html_file:
        with open(html_file, "w") as fh:
            fh.write(render_html(report))
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(format_raw_stats(report) if report["kind"] == "raw" else format_output_stats(report))


@main.command("infer-schema")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@reading_options
@click.option("-o", "--output", "target", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the schema here (default: print it).")
@click.option("--memory-limit", type=Size(), default="1GB", show_default=True,
              help="Memory for grouping scattered requests.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_fail_cleanly
def infer_schema_command(inputs, key, order_by, read, target, memory_limit, quiet):
    """Decide each column's level exactly over all the data and write a schema file for convert --schema.

    Each column gets a comment: its level and, for impression-level columns, in how many requests it varies
    (a near-miss shows as "varies in 1 of 208 requests"). A 0- or 1-based position column is suggested as
    order_by, 0/1 columns named like click/label/conversion/booking as labels.

    \b
    Example:
      roolog infer-schema sample_data/impressions.parquet --key request_id -o schemas/mine.toml
    """
    if not key:
        raise UsageProblem("give the request key with --key COL")
    inside = _output_holding(target) if target else None
    if inside:
        raise UsageProblem(f"{target} is inside the roolog output {inside}, where only roolog's own files belong; "
                           "write the schema file somewhere else")
    report = stats_raw(list(inputs), tuple(key), order_by=order_by, read=read, memory_limit=memory_limit,
                       progress=not quiet)
    schema, comments = infer_schema(report)
    text = f"# roolog infer-schema over {report['rows']:,} impressions in {report['requests']:,} requests\n"
    text += schema.to_toml(comments)
    if target:
        with open(target, "w") as fh:
            fh.write(text)
        click.echo(f"roolog: wrote {target}", err=True)
    else:
        click.echo(text, nl=False)


def _output_holding(path: str) -> str | None:
    """The roolog output (a folder with roolog's ledger) that `path` would be written inside, if any."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.isfile(os.path.join(folder, LEDGER)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


@main.command("train")
@click.argument("out", metavar="OUT")
@click.option("--label", metavar="COL", help="Impression-level 0/1 target [default: the schema's first label].")
@click.option("--layout", type=click.Choice(["request", "impression"]), default="request", show_default=True,
              help="request: the request tower runs once per request. impression: the classic pipeline, one "
                   "example per impression (the same model, for comparison).")
@click.option("--dedup", is_flag=True,
              help="Encode each distinct history of a batch once (RecD's dedup; the same logits to float "
                   "rounding): pays on an output made with --cluster-by.")
@click.option("--keep-together", multiple=True, metavar="COL",
              help="Shuffle whole users: runs of requests equal in COL (the output's --cluster-by columns, "
                   "first ones) move together, so a user's requests share a batch (repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto takes CUDA when present (bf16 autocast, pinned memory), else the CPU.")
@click.option("--smoke", is_flag=True,
              help="A short run (5 epochs or 200 steps, whichever is fewer: the same on a busy machine) that "
                   "fails unless the loss fell and eval AUC "
                   "beat 0.55: the end-to-end check to run after convert.")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many training steps.")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Stop training after this long (eval not counted).")
@click.option("--batch-impressions", type=click.IntRange(1), default=1024, show_default=True,
              help="Impressions per batch (whole requests, so about this many).")
@click.option("--eval-percent", type=click.IntRange(1, 99), default=10, show_default=True,
              help="Requests held out for eval, chosen by the hash of their key.")
@click.option("--max-history", type=click.IntRange(1), default=200, show_default=True,
              help="Most recent items of each history the encoder sees.")
@click.option("--embedding-dim", type=click.IntRange(2), default=32, show_default=True)
@click.option("--hidden", type=click.IntRange(2), default=128, show_default=True, help="Width of the MLPs.")
@click.option("--attention-layers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--attention-heads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--buckets", type=click.IntRange(2), default=1 << 18, show_default=True,
              help="Rows of the hashed embedding table shared by all id features.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate (dense layers; embeddings use --sparse-lr).")
@click.option("--sparse-lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--exclude", multiple=True, metavar="COL", help="Leave a column out of the features (repeatable).")
@click.option("--positive-threshold", type=float, metavar="T",
              help="Graded labels (relevance 0-4): values >= T are positives.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--save", metavar="DIR", help="Write the trained model and its config (model.pt, config.json) here.")
@click.option("--metrics-file", metavar="FILE", help="Append the run's summary as one JSON line to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary table.")
@_fail_cleanly
def train_command(out, as_json, quiet, **options):
    """Train a request-aware click model on converted shards, evaluate it on held-out requests.

    Request features (ids hashed into embeddings, dense values standardized, a user history through a
    causal self-attention encoder) are computed once per request and broadcast to its impressions; an
    interaction MLP gives each impression a click logit. Prints eval AUC, NE, log loss, calibration and
    impressions/s. Needs the train extra: pip install 'roolog[train]'.

    \b
    Examples:
      roolog train out --smoke                      # after convert, in cron: exit 1 unless it learns
      roolog train out --epochs 3 --save model/ --json
      roolog train out --dedup                      # on an output converted with --cluster-by user_id
      roolog train out --dedup --keep-together user_id   # ... and a user's requests in one batch
    """
    try:
        from .train import TrainConfig, train
    except ImportError as err:
        raise UsageProblem(f"roolog train needs PyTorch ({err}): pip install 'roolog[train]'") from None
    summary = train(out, TrainConfig(progress=not quiet, **options))
    if as_json:
        click.echo(json.dumps(nan_to_none(summary)))
    elif not quiet:
        click.echo(format_train_summary(summary), err=True)
    verdict = summary.get("smoke")
    if verdict and not verdict["passed"]:
        raise RoologError(f"smoke check failed on {out}: {'; '.join(verdict['failures'])}")


if __name__ == "__main__":  # pragma: no cover
    main()
