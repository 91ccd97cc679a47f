"""`roolog train`: a request-aware PyTorch trainer over converted shards (needs the `train` extra: torch).

features (columns -> feature kinds) -> data (row groups -> JaggedBatch) -> model -> trainer (loop, metrics)
"""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
