"""Stage 4, run: the conversion plan, the engine contract, the local and Spark engines, the driver behind
roolog.convert, and roolog.explode. Imports read, group and write."""
