"""roolog: impression-level recommendation logs -> request-level Parquet, losslessly, in bounded memory."""

__version__ = "0.1.0"

from .convert import convert  # noqa: E402
from .explode import explode  # noqa: E402

__all__ = ["__version__", "convert", "explode"]
