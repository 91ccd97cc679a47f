"""`roolog train`: a request-aware PyTorch trainer over converted shards (needs the `train` extra: torch).

roolog.data (shards -> RequestBatch) -> features (which columns, standardization) -> model (ModelBatch) -> trainer
"""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
