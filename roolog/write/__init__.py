"""Stage 3, write: request batches -> Parquet/zstd shards in OUT's temp folder, the manifest and report, the
output folder's ledger and locks, and checking what was written. Imports read and group, never run."""
