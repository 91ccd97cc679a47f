"""`roolog.train.train`: train the request-aware model on a converted output, evaluate, report.

The smoke mode is the end-to-end check a cron job runs after `convert`: a short training that must lower
the loss and beat chance on held-out requests, or the run fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import RequestBatch, RequestDataset
from ..errors import RoologError, UsageProblem
from ..log import bar
from ..stats.report import nan_to_none
from ..write.outdir import reading
from .features import FeatureSpec, build_spec, shard_files
from .metrics import click_metrics
from .model import ModelBatch, ModelConfig, RequestAwareModel

SMOKE_EPOCHS = 5  # a smoke run trains this many passes over the training requests ...
SMOKE_MAX_STEPS = 200  # ... or this many steps, whichever is fewer: a budget of work, never of time
SMOKE_SAFETY_SECONDS = 600.0  # only a safety stop: reaching it fails the smoke check as such
SMOKE_AUC_MARGIN = 0.05  # a smoke run passes only above AUC 0.5 + this
SMOKE_EVAL_IMPRESSIONS = 200_000  # a smoke run's eval and dense statistics stay bounded on big outputs
SMOKE_STATS_REQUESTS = 200_000
MIN_SMOKE_STEPS = 4


@dataclass
class TrainConfig:
    label: str | None = None
    layout: str = "request"  # or "impression": the classic one-example-per-impression pipeline
    dedup: bool = False  # encode each distinct history of a batch once (request layout)
    keep_together: tuple[str, ...] = ()  # shuffle whole runs of these (the output's --cluster-by) columns
    device: str = "auto"
    epochs: int = 1
    max_steps: int | None = None
    time_limit: float | None = None  # seconds of training (eval not counted)
    batch_impressions: int = 1024
    eval_percent: int = 10
    exclude: tuple[str, ...] = ()
    positive_threshold: float | None = None
    buckets: int = 1 << 18
    embedding_dim: int = 32
    hidden: int = 128
    attention_layers: int = 2
    attention_heads: int = 2
    max_history: int = 200
    lr: float = 1e-3
    sparse_lr: float = 1e-3
    workers: int = 0
    warmup_steps: int = 5  # steps left out of the throughput figures
    seed: int = 0
    smoke: bool = False
    save: str | None = None
    metrics_file: str | None = None
    progress: bool = True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageProblem("--device cuda: no CUDA device is available (use --device auto or cpu)")
    return torch.device(name)


def model_config(spec: FeatureSpec, cfg: TrainConfig) -> ModelConfig:
    return ModelConfig(buckets=spec.buckets, request_id_features=len(spec.request_ids),
                       request_dense_features=len(spec.request_dense), sequences=len(spec.sequences),
                       impression_id_features=len(spec.impression_ids),
                       impression_dense_features=len(spec.impression_dense), embedding_dim=cfg.embedding_dim,
                       hidden=cfg.hidden, attention_layers=cfg.attention_layers,
                       attention_heads=cfg.attention_heads, max_history=cfg.max_history)


def _loader(dataset: RequestDataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=cfg.workers, pin_memory=device.type == "cuda")


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizers(model: RequestAwareModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    sparse = list(model.embedding.parameters())
    dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
    return [torch.optim.SparseAdam(sparse, lr=cfg.sparse_lr), torch.optim.AdamW(dense, lr=cfg.lr)]


def _masked_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(labels)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[known].float(), labels[known])


class _Throughput:
    """Training speed over the steps after the warm-up ones: their data loading included, eval not."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.trained_impressions = warmup, 0, 0
        self.timed_impressions = 0
        self.timed_requests: int | None = 0  # None once a batch no longer says (the impression layout)
        self.start = time.perf_counter() if warmup == 0 else None
        self.end: float | None = None

    def step(self, impressions: int, requests: int | None) -> None:
        """After a step has finished (loss.item() has waited for the device)."""
        now = time.perf_counter()
        self.steps += 1
        self.trained_impressions += impressions
        if self.steps == self.warmup:
            self.start = now
        elif self.steps > self.warmup:
            self.timed_impressions += impressions
            self.timed_requests = None if requests is None or self.timed_requests is None else \
                self.timed_requests + requests
            self.end = now

    def figures(self) -> dict[str, float | None]:
        seconds = self.end - self.start if self.end is not None and self.start is not None else None
        return {"impressions_seen": self.trained_impressions,
                "impressions_per_s": self.timed_impressions / seconds if seconds else None,
                "requests_per_s": self.timed_requests / seconds if seconds and self.timed_requests is not None
                else None}


def evaluate(model: RequestAwareModel, loader: DataLoader, spec: FeatureSpec, device: torch.device,
             max_impressions: int | None = None) -> dict[str, float]:
    """Metrics over the held-out requests (the first `max_impressions` of them when given), in float32:
    bf16 logits would tie many scores and blur the AUC."""
    model.eval()
    labels, probs, seen = [], [], 0
    with torch.no_grad():
        for batch in loader:
            if max_impressions is not None and seen >= max_impressions:
                break
            seen += batch.impressions
            batch = ModelBatch.of(batch.to(device, non_blocking=True), spec)
            known = ~torch.isnan(batch.labels)
            probs.append(torch.sigmoid(model(batch).float())[known].cpu().numpy())
            labels.append(batch.labels[known].cpu().numpy())
    model.train()
    if not labels:
        raise RoologError("no eval impressions with a label: the output is too small for a held-out split")
    return click_metrics(np.concatenate(labels).astype(np.float64), np.concatenate(probs).astype(np.float64))


def loss_fell(losses: list[float]) -> bool:
    """The mean loss of the last quarter of steps is below that of the first quarter (at least 4 steps)."""
    if len(losses) < MIN_SMOKE_STEPS:
        return False
    q = len(losses) // 4
    return float(np.mean(losses[-q:])) < float(np.mean(losses[:q]))


def train(out: str, cfg: TrainConfig) -> dict:
    """Train on `out` (a `roolog convert` output); returns the summary that the CLI prints. The output's
    readers' lock is held throughout, so a convert publishing into `out` waits until training ends."""
    with reading(out):
        return _train(out, cfg)


def _train(out: str, cfg: TrainConfig) -> dict:
    if cfg.layout not in ("request", "impression"):
        raise UsageProblem(f"--layout must be request or impression, not {cfg.layout!r}")
    if cfg.dedup and cfg.layout != "request":
        raise UsageProblem("--dedup encodes each distinct history of a request batch once: it needs --layout request")
    if cfg.embedding_dim % cfg.attention_heads:
        raise UsageProblem(f"--attention-heads {cfg.attention_heads} must divide --embedding-dim {cfg.embedding_dim}")
    _check_destinations(cfg)
    if cfg.smoke:  # the same steps, so the same verdict and AUC, on an idle and on a loaded machine
        cfg.time_limit = min(cfg.time_limit or SMOKE_SAFETY_SECONDS, SMOKE_SAFETY_SECONDS)
        cfg.epochs = max(cfg.epochs, SMOKE_EPOCHS)
        cfg.max_steps = min(cfg.max_steps or SMOKE_MAX_STEPS, SMOKE_MAX_STEPS)
    torch.manual_seed(cfg.seed)
    if cfg.smoke:  # one CPU thread: float sums in one order, so the same AUC whatever else the machine runs
        torch.set_num_threads(1)
    device = pick_device(cfg.device)
    shards = shard_files(out)  # every shard checked against the manifest, once
    spec = build_spec(out, cfg.label, cfg.exclude, cfg.buckets, cfg.positive_threshold, cfg.eval_percent,
                      stats_requests=SMOKE_STATS_REQUESTS if cfg.smoke else None, shards=shards,
                      max_history=cfg.max_history)
    common: dict[str, Any] = dict(eval_percent=cfg.eval_percent, batch_impressions=cfg.batch_impressions,
                                  exploded=cfg.layout == "impression", seed=cfg.seed,
                                  verify=False)  # shard_files checked every shard
    train_set = spec.dataset(out, cfg.max_history, split="train", shuffle=True,
                             keep_together=list(cfg.keep_together), **common)
    eval_loader = _loader(spec.dataset(out, cfg.max_history, split="eval", **common), cfg, device)
    model = RequestAwareModel(model_config(spec, cfg)).to(device)
    optimizers = _optimizers(model, cfg)
    losses, speed = [], _Throughput(cfg.warmup_steps)
    started = time.perf_counter()
    progress = bar(None, f"train ({cfg.layout} layout)", "batch", cfg.progress)
    stop = timed_out = False
    for epoch in range(cfg.epochs):
        train_set.set_epoch(epoch)
        for loaded in _loader(train_set, cfg, device):
            batch = ModelBatch.of(loaded.to(device, non_blocking=True), spec, cfg.dedup)
            with _autocast(device):
                loss = _masked_loss(model(batch), batch.labels)
            if torch.isnan(loss):  # a batch with no known label
                continue
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            losses.append(loss.item())
            speed.step(batch.impressions, _requests_of(loaded, cfg.layout))
            progress.update()
            progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            elapsed = time.perf_counter() - started
            timed_out = cfg.time_limit is not None and elapsed >= cfg.time_limit
            stop = (cfg.max_steps is not None and len(losses) >= cfg.max_steps) or timed_out
            if stop:
                break
        if stop:
            break
    progress.close()
    if not losses:
        raise RoologError(f"{out}: no training impressions with a label")
    train_seconds = time.perf_counter() - started
    speed_figures = speed.figures()  # before eval, which is not training
    metrics = evaluate(model, eval_loader, spec, device, SMOKE_EVAL_IMPRESSIONS if cfg.smoke else None)
    summary = {"output": out, "device": str(device), "layout": cfg.layout, "dedup": cfg.dedup,
               "keep_together": list(cfg.keep_together), "label": spec.label,
               "steps": len(losses), "epochs_started": epoch + 1, "train_seconds": train_seconds,
               "stopped_by_time_limit": timed_out,
               "first_loss": losses[0], "last_loss": losses[-1], "loss_fell": loss_fell(losses),
               **speed_figures, "eval": metrics, "features": _feature_summary(spec)}
    if cfg.smoke:
        summary["smoke"] = smoke_verdict(summary)
    if cfg.save:
        save_checkpoint(cfg.save, model, spec, cfg)
        summary["saved"] = cfg.save
    if cfg.metrics_file:
        with open(cfg.metrics_file, "a") as f:
            f.write(json.dumps(nan_to_none({"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary})) + "\n")
    return summary


def _requests_of(batch: RequestBatch, layout: str) -> int | None:
    """Requests a training batch came from: after exploding, one row per impression no longer says."""
    return batch.requests if layout == "request" else None


def smoke_verdict(summary: dict) -> dict:
    failures = []
    if summary.get("stopped_by_time_limit"):
        failures.append(f"stopped by the time limit after {summary['steps']} steps, before its budget of "
                        f"{SMOKE_EPOCHS} epochs or {SMOKE_MAX_STEPS} steps")
    if summary["steps"] < MIN_SMOKE_STEPS:
        failures.append(f"only {summary['steps']} training steps: too few to judge (the output is too small)")
    elif not summary["loss_fell"]:
        failures.append(f"the training loss did not fall ({summary['first_loss']:.4f} -> {summary['last_loss']:.4f})")
    auc, ctr = summary["eval"]["auc"], summary["eval"]["ctr"]
    if math.isnan(auc):  # one class only: no AUC to judge by
        what = "no impressions" if math.isnan(ctr) else "no positive labels" if ctr == 0 else "no negative labels"
        failures.append(f"the eval split has {what}, so it has no AUC; the label column may be wrong (--label)")
    elif not auc >= 0.5 + SMOKE_AUC_MARGIN:
        failures.append(f"eval AUC {auc:.4f} is not above {0.5 + SMOKE_AUC_MARGIN:.2f}")
    return {"passed": not failures, "failures": failures}


def _feature_summary(spec: FeatureSpec) -> dict[str, list[str]]:
    return {"request_ids": spec.request_ids, "request_dense": spec.request_dense, "sequences": spec.sequences,
            "impression_ids": spec.impression_ids, "impression_dense": spec.impression_dense,
            "skipped": spec.skipped}


CHECKPOINT_FILES = {"model.pt", "config.json"}


def _check_destinations(cfg: TrainConfig) -> None:
    """Before training: --save may only replace an earlier checkpoint; --metrics-file needs its folder."""
    if cfg.save and os.path.exists(cfg.save):
        if not os.path.isdir(cfg.save):
            raise UsageProblem(f"--save {cfg.save}: exists and is not a folder")
        foreign = set(os.listdir(cfg.save)) - CHECKPOINT_FILES
        if foreign:
            raise UsageProblem(f"--save {cfg.save}: the folder holds other files ({sorted(foreign)[0]}, ...); "
                               "give a new or a checkpoint folder")
    parent = os.path.dirname(os.path.abspath(cfg.metrics_file)) if cfg.metrics_file else None
    if parent and not os.path.isdir(parent):
        raise UsageProblem(f"--metrics-file {cfg.metrics_file}: folder {parent} does not exist")


def save_checkpoint(folder: str, model: RequestAwareModel, spec: FeatureSpec, cfg: TrainConfig) -> None:
    """model.pt and config.json, written side by side in a temp folder and renamed into place."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".roolog-tmp-ckpt-", dir=parent)
    try:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.pt"))
        doc = {"train": asdict(cfg), "model": asdict(model.cfg), "features": json.loads(spec.to_json())}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(doc, f, indent=2)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(folder: str) -> tuple[RequestAwareModel, FeatureSpec]:
    with open(os.path.join(folder, "config.json")) as f:
        doc = json.load(f)
    model = RequestAwareModel(ModelConfig(**doc["model"]))
    model.load_state_dict(torch.load(os.path.join(folder, "model.pt"), map_location="cpu", weights_only=True))
    return model, FeatureSpec.from_json(json.dumps(doc["features"]))
