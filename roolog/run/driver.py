"""`roolog.convert`, the driver: impression-level logs -> request-level shards, manifests and reports.

    find_inputs -> plan_run (units, jobs, what is up to date) -> Engine.convert(job) per job (shards in
    OUT's temp folder) -> finish_unit (report, then manifest) -> OutputFolder.publish -> the run's report

An output is one *unit* (OUT itself) or, when the inputs are partitioned (hive folders like ds=.../, or
--partition-by COLUMN), one unit per partition (OUT/ds=.../) plus a top-level manifest listing them.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..errors import UsageProblem
from ..group.schema import load_schema
from ..log import silent
from ..read.inputs import InputFile, InputRecord, ReadOptions, file_xxh64, find_inputs
from ..write.finish import finish_partitioned, finish_unit
from ..write.manifest import UnitManifest, UnitReport, read_manifest, read_report
from ..write.outdir import OutputFolder
from .engine import Engine, JobResult
from .local import LocalEngine
from .options import EngineName, OnConflict, OutputOptions, RunOptions
from .plan import Plan, partition_column, plan_run, with_declared_types


def convert(
    inputs: Sequence[str],
    out: str,
    *,
    key: Sequence[str] = (),
    order_by: str | None = None,
    schema_file: str | None = None,
    read: ReadOptions | None = None,
    shards: int | None = None,
    compression_level: int = 3,
    on_conflict: OnConflict = "error",
    drop_null_keys: bool = False,
    partition_by: str | None = None,
    row_group_bytes: int = 64 << 20,
    row_group_requests: int | None = None,
    cluster_by: Sequence[str] = (),
    memory_limit: int = 1 << 30,
    overwrite: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[..., None] = silent,
    engine: EngineName = "local",
    spark_master: str | None = None,
) -> dict:
    """Convert impression-level logs to request-level Parquet shards in `out`, losslessly.

    Parameters
    ----------
    inputs
        Files, folders (hive folders like ``ds=2024-01-01/`` become partitions) or globs of Parquet, CSV,
        TSV or JSON Lines, optionally compressed (``.gz``, ``.zst``, ...).
    out
        The output folder. roolog writes only inside it and only files it made; a folder that holds
        anything else is refused unless ``overwrite=True`` (which still never touches those files).
    key
        The column(s) that identify a request. Required unless `schema_file` names it.
    order_by
        A column that orders impressions within a request (a stable sort; nulls last). Default: input order.
    schema_file
        A TOML schema (``roolog infer-schema`` writes one): key, request- and impression-level columns,
        labels and exact column types. A declared request-level column that varies is an error.
    read
        How to read text inputs (format, delimiter, null values, column types): `ReadOptions`.
    shards
        The number of shard files (default: one per 256 MB of input).
    compression_level
        zstd level of the shards, 1 to 22.
    on_conflict
        ``"error"`` (a declared request-level column that varies fails the run, naming column and request)
        or ``"demote"`` (it is stored per impression and listed as demoted).
    drop_null_keys
        Drop rows whose key is null (counted in the report) instead of failing.
    partition_by
        A column whose values become partition folders ``OUT/col=value/``.
    row_group_bytes, row_group_requests
        A row group closes after the request that brings it to `row_group_bytes` bytes (in memory), or
        at `row_group_requests` requests when given: small row groups let data loaders (``roolog.data``)
        spread a shard over many workers without reading it more than once.
    cluster_by
        Request-level columns (a user or session id) whose requests go to one shard (xxh64 of their values
        mod N) and sit next to each other in it, ordered by these columns, then input order: a user's
        nearly equal histories side by side, which zstd stores nearly once.
    memory_limit, overwrite, force, progress, log, engine, spark_master
        How the run goes (none of them changes a byte of the output): memory bound, writing beside
        others' files, redoing up-to-date units, the progress bar, an event callback
        (``log(event, **fields)``), ``"local"`` or ``"spark"``, and Spark's master URL.

    Returns
    -------
    dict
        The run's report as in ``_report.json`` (totals, per-column bytes, impressions per request, ...),
        plus ``skipped`` and ``left_untouched``. A partitioned output's report lists its partitions.

    Raises
    ------
    roolog.UsageProblem
        Bad options or inputs (the CLI's exit code 2).
    roolog.RoologError
        Bad data: one line naming file, row, column and value (exit code 1).

    Examples
    --------
    >>> import roolog
    >>> report = roolog.convert(["sample_data/impressions.parquet"], "out", key=["request_id"],
    ...                         order_by="position", progress=False)
    >>> report["totals"]["requests"]
    2000
    >>> roolog.convert(["sample_data/impressions.parquet"], "out", key=["request_id"],
    ...                order_by="position", progress=False)["skipped"]  # same inputs and options
    True
    >>> roolog.explode("out", "impressions.parquet")["rows"]  # the exact inverse
    20007
    """
    inputs = [inputs] if isinstance(inputs, str | os.PathLike) else inputs  # one path, not its characters
    key = [key] if isinstance(key, str) else key
    output = OutputOptions(key=tuple(key), order_by=order_by, schema_file=schema_file, read=read or ReadOptions(),
                           shards=shards, compression_level=compression_level, on_conflict=on_conflict,
                           drop_null_keys=drop_null_keys, partition_by=partition_by, row_group_bytes=row_group_bytes,
                           row_group_requests=row_group_requests,
                           cluster_by=(cluster_by,) if isinstance(cluster_by, str) else tuple(cluster_by))
    run = RunOptions(memory_limit=memory_limit, overwrite=overwrite, force=force, progress=progress, log=log,
                     engine=engine, spark_master=spark_master)
    return convert_with([os.fspath(i) for i in inputs], os.fspath(out), output, run)


def convert_with(inputs: list[str], out: str, output: OutputOptions, run: RunOptions) -> dict:
    """`convert` with its options as the two records (what decides the output, how to run)."""
    if run.engine == "spark" and importlib.util.find_spec("pyspark") is None:
        raise UsageProblem("--engine spark needs PySpark: pip install 'roolog[spark]' (and Java 17 or later)")
    started = time.perf_counter()
    if output.schema_file:
        output = replace(output, read=with_declared_types(output.read, load_schema(output.schema_file)))
    found = find_inputs(inputs, output.read.input_format, output=out, storage=output.read.storage_options)
    files = found.files
    if found.skipped:
        run.log("warning", message=f"{len(found.skipped):,} file(s) not in --input-format "
                                   f"{output.read.input_format} skipped ({found.skipped[0]}, ...)")
    schema_hash = file_xxh64(output.schema_file) if output.schema_file and os.path.isfile(output.schema_file) else None
    column = partition_column(files, output.partition_by)
    record = output.record(schema_hash, column)
    with OutputFolder(out, run.overwrite) as folder:
        run.log("start", output=out, inputs=len(files), partition_by=column)
        if folder.left:
            run.log("warning", message=f"{out} holds {len(folder.left):,} file(s) roolog did not write "
                                       f"({folder.left[0]}, ...): left as they are")
        plan = plan_run(folder, files, column, record, run.force, run.log)
        report = _Run(folder, output, run, record, started).carry_out(plan)
        report["left_untouched"] = folder.left
    report["wall_seconds"] = round(time.perf_counter() - started, 3)
    run.log("summary", **{k: v for k, v in report.items() if k != "columns"})
    return report


def _engine(folder: OutputFolder, output: OutputOptions, run: RunOptions) -> Engine:
    if run.engine == "spark":
        from .spark import SparkEngine

        return SparkEngine(folder, output, run)
    return LocalEngine(folder, output, run)


class _Run:
    """One convert call carrying out its plan: each job made by the engine, finished and published."""

    def __init__(self, folder: OutputFolder, output: OutputOptions, run: RunOptions, record: dict, started: float):
        self.folder, self.output, self.run, self.record, self.started = folder, output, run, record, started
        self.engine = _engine(folder, output, run)
        self.reports: dict[str | None, dict] = {}
        self.inputs: list[InputRecord] = []  # of the last job, fingerprinted after it was read
        self.null_key_rows = 0

    def carry_out(self, plan: Plan) -> dict:
        folder, log = self.folder, self.run.log
        if plan.layout == "hive":
            for name in plan.skipped:
                log("skipped", partition=name)
        elif plan.skipped:
            log("skipped", output=folder.out)
        inputs = plan.inputs
        for job in plan.jobs:
            made = self._make(list(job.files), self.engine.convert(job))
            if plan.layout == "flat":
                folder.publish("", folder.unit_path("_flat"))
                continue
            folder.unpublish_manifest()  # from here until its manifest is rewritten, OUT is not finished
            for name in made:
                folder.publish(name, folder.unit_path(name))
            if plan.layout == "column":
                inputs = self.inputs
                for gone in folder.published_partitions():
                    if gone not in made:
                        folder.remove_partition(gone)  # from inputs that no longer hold it
        if plan.layout == "flat":
            report = self.reports[None] if plan.jobs else read_report(folder.out)
            return report | {"skipped": not plan.jobs}
        assert plan.column is not None
        skipped = [name for name in plan.skipped if name]
        converted = [name for name in self.reports if name]
        done = finish_partitioned(folder, plan.column, self.record, inputs, converted, skipped, self.null_key_rows,
                                  log)
        if plan.layout == "hive" and self.output.schema_file:
            self._declared_but_nowhere(folder, plan.column)
        return done.to_json()

    def _declared_but_nowhere(self, folder: OutputFolder, column: str) -> None:
        """A hive partition may lack columns the schema file names; one that no partition has is likely a
        typo: said as a warning (the partitions are published by now)."""
        declared = load_schema(self.output.schema_file or "")
        seen = {column}
        for name in folder.published_partitions():
            manifest = read_manifest(os.path.join(folder.out, name))
            if isinstance(manifest, UnitManifest):
                seen |= {*manifest.schema.key, *manifest.schema.request, *manifest.schema.impression}
        missing = [c for c in [*declared.request, *declared.impression] if c not in seen]
        if missing:
            self.run.log("warning", message=f"the schema file names column(s) {missing} that no partition has "
                                            "(a typo?)")

    def _make(self, files: list[InputFile], result: JobResult) -> list[str]:
        """Write each made unit's report and manifest; returns the names of the partitions among them."""
        self.inputs = result.inputs
        for unit in result.units:
            report = finish_unit(unit, files, result.inputs, self.record, time.perf_counter() - self.started)
            self.reports[unit.name] = report.to_json()
            self._announce(report)
        self.null_key_rows += result.null_key_rows
        if result.null_key_rows:
            self.run.log("warning", message=f"{result.null_key_rows:,} rows with a null key were dropped")
        return [unit.name for unit in result.units if unit.name]

    def _announce(self, report: UnitReport) -> None:
        log = self.run.log
        log("done", partition=report.partition, output=self.folder.out, requests=report.totals.requests,
            rows=report.totals.rows, shards=report.totals.shards)
        for col in report.demoted:
            log("warning", message=f"column {col!r} varied inside a request: stored as a list")
