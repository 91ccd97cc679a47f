"""Stage 2, group: impression rows -> one row per request, levels checked exactly as rows pass; the keys,
exact value comparisons, the spill of scattered requests, and the inverse. Imports read, never write or run."""
