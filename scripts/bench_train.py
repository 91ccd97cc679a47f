#!/usr/bin/env python3
"""Training throughput: request layout vs impression layout, same model, same impressions seen.

For each history length, a seeded synthetic log (the project's own generator) is converted with roolog,
then `roolog.train` runs twice over the same training batches: --layout request (the request tower and
its causal attention over the history once per request) and --layout impression (the classic
pipeline: each impression carries its own copy of the history, the tower runs once per impression).
Both see the same impressions in the same order from the same initial weights, so eval AUC should agree;
the ratio of impressions/s (after warm-up, data loading included) is the training-side win.

Then a TorchRec model fed by `roolog.data`: an EmbeddingBagCollection (one table per id feature, the
history pooled as a bag; sparse gradients, SparseAdam) and an MLP over the pooled embeddings (Adam),
trained on
`batch.to_kjt("request")` (request features pooled once per request, expanded by inverse_indices) and on
`batch.to_kjt("impression")` (every feature pooled per impression), over the same batches from the same
weights; the pooled embeddings of the first batch are compared between layouts before timing counts. A
third variant ("split") pools the request features in a KJT of R rows without inverse_indices and
broadcasts them with `pooled[batch.request_index()]`: on the CPU, fbgemm's backward of the
`group_index_select_dim0` that TorchRec's EmbeddingBagCollection uses to expand by inverse_indices is a
loop per row, which this avoids.

Then dedup (RecD): a time-ordered log of repeat users whose history (100 items) stays the same between a
user's requests, converted with --cluster-by user_id, at batches of 512 and of 4,096 impressions; the
bundled trainer's request layout without and with --dedup (each distinct history of a batch encoded once),
both with --keep-together user_id (a shuffle of whole users, so that a user's requests share a batch),
and the EBC model on to_kjt("impression"), to_kjt("request") and to_kjt("request", dedup=True) (read in
order: a user's requests are adjacent). A fourth EBC variant ("dedup-pooled") runs the same EBC on the same
dedup KJT through `roolog.data.pooled(ebc, kjt)`, which expands each feature's pooled rows with
`torch.index_select` and not TorchRec's `inverse_indices` path: on the CPU, fbgemm's backward of that
expansion is a loop per row.

    python scripts/bench_train.py              # history 100 and 1,000 (about 10 minutes on 2 CPU cores)
    python scripts/bench_train.py --quick      # small, a check that the script runs
    python scripts/bench_train.py --device cuda
    python scripts/bench_train.py --dedup-only # only the dedup cases, medians of 3 (about 3 minutes here)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
import roolog  # noqa: E402
from roolog.data import RequestBatch, RequestDataset, pooled  # noqa: E402
from roolog.synthetic import generate_impressions, generate_repeat_users  # noqa: E402
from roolog.train import TrainConfig, train  # noqa: E402

CASES = {  # history length: (requests in the log, training steps of 512 impressions)
    100: (20_000, 120),
    1000: (2_000, 12),
}
QUICK = {20: (2_000, 10), 200: (1_000, 6)}
TORCHREC_STEPS = {100: 60, 1000: 30, 20: 10, 200: 6}  # batches of 512 impressions
BUCKETS, DIM = 50_000, 32


def make_output(folder: str, requests: int, history: int) -> str:
    log = os.path.join(folder, f"h{history}.parquet")
    pq.write_table(generate_impressions(requests, history_len=history, seed=history), log)
    out = os.path.join(folder, f"h{history}_out")
    roolog.convert([log], out, key=("request_id",), order_by="position",
                   schema_file=os.path.join(REPO, "schemas", "sample.toml"), progress=False)
    return out


DEDUP_USERS, DEDUP_REQUESTS_PER_USER, DEDUP_STEPS, DEDUP_TORCHREC_STEPS = 400, 25, 60, 60


def make_clustered(folder: str, history: int) -> str:
    """Repeat users with snapshot histories, converted with --cluster-by user_id."""
    log = os.path.join(folder, "repeat.parquet")
    pq.write_table(generate_repeat_users(users=DEDUP_USERS, requests_per_user=DEDUP_REQUESTS_PER_USER,
                                         history_len=history, snapshot_share=1.0, seed=3), log)
    out = os.path.join(folder, "repeat_out")
    roolog.convert([log], out, key=("request_id",), order_by="position", cluster_by="user_id", progress=False)
    return out


def run(out: str, layout: str, history: int, steps: int, device: str, dedup: bool = False,
        batch_impressions: int = 512, keep_together: tuple[str, ...] = ()) -> dict:
    cfg = TrainConfig(layout=layout, max_history=history, max_steps=steps, batch_impressions=batch_impressions,
                      device=device, warmup_steps=3, progress=False, dedup=dedup, keep_together=keep_together)
    return train(out, cfg)


class EBCModel(torch.nn.Module):
    """TorchRec EmbeddingBagCollections over the request and the impression id features (one table per
    feature, sparse gradients), and an MLP over the pooled embeddings."""

    def __init__(self, request: list[str], impression: list[str]):
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig

        def ebc(features: list[str]) -> EmbeddingBagCollection:
            tables = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
                name=f, embedding_dim=DIM, num_embeddings=BUCKETS, feature_names=[f]) for f in features])
            for bag in tables.embedding_bags.values():  # sparse gradients: a step touches only the rows it used
                bag.sparse = True
            return tables

        self.request, self.impression = request, impression
        self.request_ebc, self.impression_ebc = ebc(request), ebc(impression)
        self.mlp = torch.nn.Sequential(torch.nn.Linear((len(request) + len(impression)) * DIM, 128),
                                       torch.nn.ReLU(), torch.nn.Linear(128, 1))

    def pooled(self, batch: RequestBatch, layout: str) -> torch.Tensor:
        """[I, features x DIM] in every layout."""
        if layout == "split":  # request features pooled at R rows, broadcast by index (no inverse_indices)
            from torchrec import KeyedJaggedTensor

            kjt = KeyedJaggedTensor(keys=self.request,
                                    values=torch.cat([batch.request_ids[k].values for k in self.request]),
                                    lengths=torch.cat([batch.request_ids[k].lengths for k in self.request]))
            by_request = self.request_ebc(kjt).values()[batch.request_index()]
        elif layout == "dedup":  # each distinct request row of the batch pooled once (RecD's IKJT)
            by_request = self.request_ebc(batch.to_kjt("request", keys=self.request, dedup=True)).values()
        elif layout == "dedup-pooled":  # the same, expanded by index_select (roolog.data.pooled)
            by_request = pooled(self.request_ebc, batch.to_kjt("request", keys=self.request, dedup=True)).values()
        else:
            by_request = self.request_ebc(batch.to_kjt(layout, keys=self.request)).values()
        by_impression = self.impression_ebc(batch.to_kjt("impression", keys=self.impression)).values()
        return torch.cat([by_request, by_impression], 1)

    def forward(self, batch: RequestBatch, layout: str) -> torch.Tensor:
        return self.mlp(self.pooled(batch, layout)).squeeze(1)


def run_torchrec(out: str, layout: str, steps: int, device: str, warmup: int = 3,
                 batch_impressions: int = 512) -> dict:
    """impressions/s of the EBC model after `warmup` steps, data loading and to_kjt included."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    data = RequestDataset(out, batch_impressions=batch_impressions, id_buckets=BUCKETS)
    torch.manual_seed(0)
    first = next(iter(data))
    model = EBCModel(list(first.request_ids), list(first.impression_ids)).to(dev)
    with torch.no_grad():  # the layouts pool alike, or the figures mean nothing
        a, *others = (model.pooled(first.to(dev), kind) for kind in ("request", "impression", "split", "dedup",
                                                                      "dedup-pooled"))
        for other in others:
            torch.testing.assert_close(a, other)
    opts = [torch.optim.SparseAdam([*model.request_ebc.parameters(), *model.impression_ebc.parameters()], lr=1e-3),
            torch.optim.Adam(model.mlp.parameters(), lr=1e-3)]
    seen, started, losses = 0, None, []
    for step, batch in enumerate(data):
        if step == steps:
            break
        if step == warmup:
            started, seen = time.perf_counter(), 0
        batch = batch.to(dev, non_blocking=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch, layout), batch.labels["click"])
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        losses.append(loss.item())  # waits for the device
        seen += batch.impressions
    assert started is not None, "too few batches for the warm-up"
    return {"impressions_per_s": seen / (time.perf_counter() - started), "steps": len(losses),
            "last_loss": losses[-1], "losses": losses, "device": str(dev)}


DEDUP_BATCHES = (512, 4096)  # impressions per batch
EBC_LAYOUTS = ("impression", "request", "dedup", "dedup-pooled")


def dedup_cases(folder: str, device: str, quick: bool, repeats: int = 1) -> dict:
    """Each case `repeats` times (the output made once); the table gives the median impressions/s of each."""
    history = 100
    out = make_clustered(folder, history)
    rows, results = [], {}
    for batch in DEDUP_BATCHES:
        scale = 512 / batch  # the same impressions seen at every batch size
        # the EBC steps are short: at least 20 (17 timed) so one slow step does not decide a median
        steps, torchrec_steps = (10, 10) if quick else (max(8, int(DEDUP_STEPS * scale)),
                                                        max(20, int(DEDUP_TORCHREC_STEPS * scale)))
        runs = []
        for _ in range(repeats):
            trainer = {name: run(out, layout, history, steps, device, dedup=name == "dedup",
                                 batch_impressions=batch, keep_together=("user_id",) if layout == "request" else ())
                       for name, layout in (("impression", "impression"), ("request", "request"),
                                            ("dedup", "request"))}
            ebc = {kind: run_torchrec(out, kind, torchrec_steps, device, batch_impressions=batch)
                   for kind in EBC_LAYOUTS}
            runs.append({"bundled trainer": trainer, "TorchRec EBC": ebc})
        for r in runs:  # the same weights, batches and steps: every EBC layout follows the impression layout's loss
            base = np.array(r["TorchRec EBC"]["impression"]["losses"])
            for kind in EBC_LAYOUTS[1:]:
                drift = float(np.abs(np.array(r["TorchRec EBC"][kind]["losses"]) - base).max())
                r["TorchRec EBC"][kind]["loss_drift"] = drift
                assert drift < 1e-3 * float(np.abs(base).max()), (batch, kind, drift)
        drifts = {kind: max(r["TorchRec EBC"][kind]["loss_drift"] for r in runs) for kind in EBC_LAYOUTS[1:]}
        print(f"dedup, batches of {batch}: largest loss difference from the impression layout over {torchrec_steps} "
              "steps: " + ", ".join(f"{k} {v:.1e}" for k, v in drifts.items()), file=sys.stderr)
        for model in ("bundled trainer", "TorchRec EBC"):
            s = {k: statistics.median(r[model][k]["impressions_per_s"] for r in runs) for k in runs[0][model]}
            extra = (f"{s['dedup-pooled']:,.0f} | {s['dedup-pooled'] / s['impression']:.2f}x"
                     if "dedup-pooled" in s else "- | -")
            first = runs[0]["bundled trainer"]
            aucs = (f"{first['request']['eval']['auc']:.4f} | {first['dedup']['eval']['auc']:.4f}"
                    if model == "bundled trainer" else "- | -")
            rows.append(f"| {model} | {batch:,} | {s['impression']:,.0f} | {s['request']:,.0f} | {s['dedup']:,.0f} | "
                        f"{s['dedup'] / s['request']:.2f}x | {s['dedup'] / s['impression']:.2f}x | {extra} | {aucs} |")
        results[batch] = runs
        print(f"dedup, batches of {batch}: done", file=sys.stderr)
    return {"rows": rows, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases, a check that the script runs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--dedup-only", action="store_true", help="only the dedup cases")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each dedup case (their median is shown)")
    args = parser.parse_args()
    rows, results, torchrec_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="roolog-bench-train-") as folder:
        repeats = 1 if args.quick else args.repeats
        dedup = dedup_cases(folder, args.device, quick=args.quick, repeats=repeats)
        for history, (requests, steps) in ({} if args.dedup_only else QUICK if args.quick else CASES).items():
            out = make_output(folder, requests, history)
            by_layout = {layout: run(out, layout, history, steps, args.device) for layout in ("request", "impression")}
            req, imp = by_layout["request"], by_layout["impression"]
            results.append({"history": history, "requests": requests, "steps": steps, **by_layout})
            speed_up = req["impressions_per_s"] / imp["impressions_per_s"]
            rows.append(f"| {history:,} | {req['device']} | {req['impressions_seen']:,} | "
                        f"{imp['impressions_per_s']:,.0f} | {req['impressions_per_s']:,.0f} | {speed_up:.2f}x | "
                        f"{imp['eval']['auc']:.4f} | {req['eval']['auc']:.4f} | "
                        f"{abs(req['eval']['auc'] - imp['eval']['auc']):.4f} |")
            ebc = {layout: run_torchrec(out, layout, TORCHREC_STEPS[history], args.device)
                   for layout in ("request", "impression", "split")}
            results[-1]["torchrec"] = ebc
            by_req, by_imp = ebc["request"]["impressions_per_s"], ebc["impression"]["impressions_per_s"]
            by_split = ebc["split"]["impressions_per_s"]
            torchrec_rows.append(f"| {history:,} | {ebc['request']['device']} | {ebc['request']['steps']} | "
                                 f"{by_imp:,.0f} | {by_req:,.0f} | {by_req / by_imp:.2f}x | {by_split:,.0f} | "
                                 f"{by_split / by_imp:.2f}x |")
            print(f"history {history}: done", file=sys.stderr)
    if rows:
        print("| history | device | impressions seen (each) | impression layout imp/s | request layout imp/s | "
              "speed-up | AUC impression | AUC request | AUC diff |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print("\nTorchRec EmbeddingBagCollection fed by RequestBatch.to_kjt, batches of 512 impressions:\n")
        print("| history | device | steps | to_kjt('impression') imp/s | to_kjt('request') imp/s | speed-up | "
              "split EBCs imp/s | speed-up |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(torchrec_rows))
    print(f"\nDedup: {DEDUP_USERS} repeat users x {DEDUP_REQUESTS_PER_USER} requests, history 100 unchanged between "
          f"a user's requests, converted with --cluster-by user_id (imp/s, medians of {repeats}):\n")
    print("| model | batch (impressions) | impression layout | request layout | request + dedup | dedup / request | "
          "dedup / impression | dedup, pooled() | dedup, pooled() / impression | AUC request | AUC dedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(dedup["rows"]))
    results.append({"dedup": dedup["results"]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
