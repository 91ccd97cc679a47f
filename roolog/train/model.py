"""A request-aware ranking model: the request tower runs once per request, its output is broadcast to the
request's impressions, an interaction MLP gives one click logit per impression (DLRM towers, with an
HSTU-like causal self-attention encoder over the user history).

Every part computes each request (or impression) independently of the others in its batch: no batch
norm, no cross-row mixing. That is what makes both layouts give the same logits from the same weights, and
what lets `dedup` encode each distinct history of a batch once (RecD's dedup) and give each request its row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Jagged, RequestBatch, distinct_rows
from .features import FeatureSpec, label_values


@dataclass
class ModelBatch:
    """A RequestBatch as the model takes it: id features side by side (bucket 0 where null), dense features
    standardized (0 where null), histories jagged, labels 0/1 (NaN where unknown)."""

    request_ids: torch.Tensor  # [R, request id features]
    request_dense: torch.Tensor  # [R, request dense features]
    sequence_values: list[torch.Tensor]  # per sequence feature: [total length]
    sequence_offsets: list[torch.Tensor]  # per sequence feature: [rows + 1] (rows: R, or its distinct histories)
    sequence_index: list[torch.Tensor | None]  # per sequence feature: each request's row (dedup), or None
    impression_ids: torch.Tensor  # [I, impression id features]
    impression_dense: torch.Tensor  # [I, impression dense features]
    request_index: torch.Tensor  # [I]: each impression's request row
    labels: torch.Tensor  # [I]

    @property
    def requests(self) -> int:
        return len(self.request_ids)

    @property
    def impressions(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, batch: RequestBatch, spec: FeatureSpec, dedup: bool = False) -> ModelBatch:
        """On the batch's device; ids shift by one so that bucket 0 stays the null (padding) row. `dedup`:
        each distinct history of the batch once (roolog.data.distinct_rows), with each request's row."""
        def ids(jagged: dict, names: list[str], rows: int) -> torch.Tensor:
            out = torch.zeros((rows, len(names)), dtype=torch.int64, device=batch.lengths.device)
            for j, name in enumerate(names):
                present = jagged[name].lengths.bool()
                out[present, j] = jagged[name].values + 1
            return out

        def dense(values: dict, names: list[str], rows: int) -> torch.Tensor:
            out = torch.zeros((rows, len(names)), dtype=torch.float32, device=batch.lengths.device)
            for j, name in enumerate(names):
                mean, std = spec.dense_stats[name]
                out[:, j] = torch.nan_to_num((values[name] - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
            return out

        r, i = batch.requests, batch.impressions
        histories: list[Jagged] = [batch.request_ids[name] for name in spec.sequences]
        index: list[torch.Tensor | None] = [None] * len(histories)
        if dedup:
            pairs = [distinct_rows(h) for h in histories]
            histories, index = [distinct for distinct, _ in pairs], [row_of for _, row_of in pairs]
        return cls(request_ids=ids(batch.request_ids, spec.request_ids, r),
                   request_dense=dense(batch.request_dense, spec.request_dense, r),
                   sequence_values=[h.values + 1 for h in histories], sequence_offsets=[h.offsets for h in histories],
                   sequence_index=index,
                   impression_ids=ids(batch.impression_ids, spec.impression_ids, i),
                   impression_dense=dense(batch.impression_dense, spec.impression_dense, i),
                   request_index=batch.request_index(),
                   labels=label_values(batch.labels[spec.label], spec).float())


@dataclass
class ModelConfig:
    buckets: int = 1 << 18
    request_id_features: int = 0
    request_dense_features: int = 0
    sequences: int = 0
    impression_id_features: int = 0
    impression_dense_features: int = 0
    embedding_dim: int = 32
    hidden: int = 128
    attention_layers: int = 2
    attention_heads: int = 2
    max_history: int = 200


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class CausalBlock(nn.Module):
    """Pre-norm causal self-attention and feed-forward. Causality also makes right padding harmless:
    a real position never attends to the padding after it."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = mlp(dim, 4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(n, length, dim))
        return x + self.ff(self.norm2(x))


class HistoryEncoder(nn.Module):
    """Jagged history ids -> one vector per request: mean of the encoded positions and the last one."""

    def __init__(self, embedding: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.embedding = embedding
        self.position = nn.Embedding(cfg.max_history, cfg.embedding_dim)
        self.blocks = nn.ModuleList(CausalBlock(cfg.embedding_dim, cfg.attention_heads)
                                    for _ in range(cfg.attention_layers))
        self.norm = nn.LayerNorm(cfg.embedding_dim)

    def forward(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        lengths = offsets[1:] - offsets[:-1]
        n, longest = len(lengths), max(int(lengths.max()) if len(lengths) else 0, 1)
        slot = torch.arange(longest, device=values.device)
        valid = slot[None, :] < lengths[:, None]  # [n, longest]
        ids = torch.zeros((n, longest), dtype=torch.int64, device=values.device)
        ids[valid] = values  # right-padded; padding id 0 is the zero vector
        x = self.embedding(ids) + self.position(slot)[None]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x) * valid[..., None]
        mean = x.sum(1) / lengths.clamp(min=1)[:, None]
        last = x[torch.arange(n, device=x.device), (lengths - 1).clamp(min=0)]
        return torch.cat([mean, last], dim=1)


class RequestAwareModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, h = cfg.embedding_dim, cfg.hidden
        # one hashed table for all id features (each salted by feature); sparse gradients keep steps cheap
        self.embedding = nn.Embedding(cfg.buckets, d, padding_idx=0, sparse=True)
        self.histories = nn.ModuleList(HistoryEncoder(self.embedding, cfg) for _ in range(cfg.sequences))
        request_in = d * cfg.request_id_features + cfg.request_dense_features + 2 * d * cfg.sequences
        self.request_tower = mlp(max(request_in, 1), h, h)
        impression_in = d * cfg.impression_id_features + cfg.impression_dense_features
        self.impression_tower = mlp(max(impression_in, 1), h, h)
        self.interaction = nn.Sequential(nn.Linear(3 * h, h), nn.ReLU(), nn.Linear(h, h // 2), nn.ReLU(),
                                         nn.Linear(h // 2, 1))

    def request_vectors(self, batch: ModelBatch) -> torch.Tensor:
        """The expensive, user-side part: once per row of the batch's request features."""
        parts = [self.embedding(batch.request_ids).flatten(1), batch.request_dense]
        histories = zip(self.histories, batch.sequence_values, batch.sequence_offsets, batch.sequence_index,
                        strict=True)
        for encode, values, offsets, index in histories:  # each distinct history once when deduplicated
            encoded = encode(values, offsets)
            parts.append(encoded if index is None else encoded[index])
        return self.request_tower(_cat(parts, batch.requests, batch.request_dense))

    def forward(self, batch: ModelBatch) -> torch.Tensor:
        request = self.request_vectors(batch)[batch.request_index]  # broadcast to impressions
        parts = [self.embedding(batch.impression_ids).flatten(1), batch.impression_dense]
        impression = self.impression_tower(_cat(parts, batch.impressions, batch.impression_dense))
        return self.interaction(torch.cat([request, impression, request * impression], dim=1)).squeeze(1)


def _cat(parts: list[torch.Tensor], rows: int, like: torch.Tensor) -> torch.Tensor:
    """Features side by side; a constant column when there are none (a tower still needs an input)."""
    parts = [p.to(like.dtype) for p in parts if p.shape[1]]
    return torch.cat(parts, dim=1) if parts else torch.ones((rows, 1), dtype=like.dtype, device=like.device)
