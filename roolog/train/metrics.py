"""Click-prediction metrics over labels in {0, 1} and predicted probabilities."""

from __future__ import annotations

import math

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when one class is missing."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = mean_rank[inverse][labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def click_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, log loss, NE (log loss over the entropy of the base click rate: < 1 beats predicting the rate)
    and calibration (predicted clicks / observed clicks)."""
    ctr = float(labels.mean()) if len(labels) else float("nan")
    loss = log_loss(labels, probs) if len(labels) else float("nan")
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr)) if 0 < ctr < 1 else float("nan")
    return {"auc": auc(labels, probs), "log_loss": loss, "ne": loss / entropy, "ctr": ctr,
            "calibration": float(probs.mean() / ctr) if ctr > 0 else float("nan"), "impressions": len(labels)}
