"""roolog train: layouts agree, every impression once per epoch, smoke passes on real data and fails on noise,
bad input gets one line."""

import collections
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

import roolog
from conftest import LTR, MIND, REPO, SAMPLE, TRIVAGO, run_cli
from roolog.train.data import RequestDataset, collate
from roolog.train.features import build_spec, shard_files
from roolog.train.metrics import auc, click_metrics
from roolog.train.model import RequestAwareModel
from roolog.train.trainer import TrainConfig, load_checkpoint, model_config

SAMPLE_SCHEMA = os.path.join(REPO, "schemas", "sample.toml")


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    """The sample log in 3 shards of several row groups each, so that work really splits."""
    out = tmp_path_factory.mktemp("train") / "out"
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(out), schema_file=SAMPLE_SCHEMA, shards=3,
                   row_group_bytes=200_000, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def mind_out(tmp_path_factory, shared_datasets):
    out = tmp_path_factory.mktemp("mind") / "out"
    roolog.convert([os.path.join(MIND, "impressions_exploded.parquet")], str(out),
                   schema_file=os.path.join(REPO, "schemas", "mind.toml"), progress=False)
    return str(out)


def _trained_model(out: str, steps: int = 5) -> tuple[RequestAwareModel, object]:
    """A model after a few steps (so weights are not at their symmetric start) and its feature spec."""
    cfg = TrainConfig(max_steps=steps, progress=False, save=None)
    spec = build_spec(out)
    torch.manual_seed(0)
    model = RequestAwareModel(model_config(spec, cfg))
    opt = torch.optim.SGD([p for p in model.parameters() if p is not model.embedding.weight], lr=0.1)
    batches = RequestDataset(shard_files(out)[1], spec, batch_impressions=256)
    for _, batch in zip(range(steps), batches, strict=False):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels.nan_to_num(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), spec


@pytest.mark.parametrize("which", ["sample", "mind"])
def test_both_layouts_give_the_same_logits(which, sample_out, mind_out):
    out = sample_out if which == "sample" else mind_out
    model, spec = _trained_model(out)
    table = pq.ParquetFile(shard_files(out)[1][0]).read_row_group(0).slice(0, 64)
    batch = collate(table, spec, max_history=200)
    exploded = batch.exploded()
    assert batch.requests == 64 and exploded.requests == batch.impressions > 64
    if spec.sequences:  # every impression carries its own copy of the history
        lengths = batch.sequence_offsets[0].diff()
        assert int(exploded.sequence_offsets[0][-1]) == int((lengths * batch.offsets.diff()).sum())
    with torch.no_grad():
        by_request, by_impression = model(batch), model(exploded)
    assert by_request.shape == (batch.impressions,)
    torch.testing.assert_close(by_request, by_impression, rtol=1e-5, atol=1e-5)
    assert by_request.std() > 1e-3  # not a constant the two layouts would trivially agree on


def test_datasets_of_both_layouts_yield_the_same_logits(sample_out):
    model, spec = _trained_model(sample_out)
    paths = shard_files(sample_out)[1]
    with torch.no_grad():
        logits = {layout: torch.cat([model(b) for b in RequestDataset(paths, spec, layout=layout,
                                                                        batch_impressions=300)])
                  for layout in ("request", "impression")}
    torch.testing.assert_close(logits["request"], logits["impression"], rtol=1e-5, atol=1e-5)


def _impressions(batches) -> collections.Counter:
    """Each impression as (its features, its request's features, label): a multiset to compare."""
    seen = collections.Counter()
    for b in batches:
        rows = b.request_index()
        request = torch.cat([b.request_ids, b.request_dense.to(torch.float64).mul(1e6).round().long()], 1)[rows]
        dense = b.impression_dense.to(torch.float64).mul(1e6).round().long()  # stats may differ in the last bit
        for r, i, d, y in zip(request.tolist(), b.impression_ids.tolist(), dense.tolist(),
                              b.labels.tolist(), strict=True):
            seen[(tuple(r), tuple(i), tuple(d), y)] += 1
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_every_impression_once_per_epoch_across_workers(sample_out, workers):
    spec = build_spec(sample_out)
    manifest, paths = shard_files(sample_out)
    assert sum(pq.ParquetFile(p).num_row_groups for p in paths) >= 4  # really split
    everything = collections.Counter()
    for split in ("train", "eval"):
        dataset = RequestDataset(paths, spec, split=split, shuffle=True, batch_impressions=500)
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            got = _impressions(DataLoader(dataset, batch_size=None, num_workers=workers))
            if epoch == 0:
                first = got
            assert got == first  # a new order each epoch, the same impressions
        everything += first
    assert sum(everything.values()) == sum(s["impressions"] for s in manifest["shards"]) == 20_007
    single = _impressions(RequestDataset(paths, spec, batch_impressions=10_000))
    assert everything == single


def test_eval_split_follows_the_key_not_the_shard_layout(sample_out, tmp_path):
    other = tmp_path / "one_shard"
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(other), schema_file=SAMPLE_SCHEMA, shards=1,
                   progress=False)
    counts = []
    for out in (sample_out, str(other)):
        spec = build_spec(out)
        batches = RequestDataset(shard_files(out)[1], spec, split="eval", eval_percent=10)
        counts.append(_impressions(batches))
    assert counts[0] == counts[1]
    assert 0.05 < sum(counts[0].values()) / 20_007 < 0.15


def test_metrics_against_brute_force():
    rng = np.random.default_rng(1)
    labels = (rng.random(300) < 0.3).astype(float)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # ties included
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert auc(labels, scores) == pytest.approx(expected)
    probs = np.full(300, labels.mean())
    assert click_metrics(labels, probs)["ne"] == pytest.approx(1.0)  # predicting the base rate: NE 1
    assert click_metrics(labels, probs)["calibration"] == pytest.approx(1.0)
    assert np.isnan(auc(np.ones(5), np.arange(5.0)))


def test_smoke_passes_on_the_sample(sample_out, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    for _ in range(2):
        result = run_cli("train", sample_out, "--smoke", "--json", "--metrics-file", str(metrics),
                         "--save", str(tmp_path / "model"))
        assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["smoke"] == {"passed": True, "failures": []}
    assert summary["eval"]["auc"] > 0.55 and summary["loss_fell"]
    assert summary["impressions_per_s"] > 0 and summary["device"] == "cpu"
    assert summary["features"]["sequences"] == ["user_history_item_ids"]
    assert [json.loads(line)["eval"]["auc"] for line in metrics.read_text().splitlines()] == \
        [summary["eval"]["auc"]] * 2  # appended, and seeded runs agree
    model, spec = load_checkpoint(str(tmp_path / "model"))
    batch = collate(pq.ParquetFile(shard_files(sample_out)[1][0]).read_row_group(0), spec, max_history=200)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(batch)).all()


def test_smoke_fails_when_labels_are_noise(tmp_path):
    table = pq.read_table(os.path.join(SAMPLE, "impressions.parquet"))
    shuffled = np.random.default_rng(0).permutation(table.column("click").to_numpy())
    table = table.set_column(table.schema.get_field_index("click"), "click", pa.array(shuffled))
    pq.write_table(table, tmp_path / "noise.parquet")
    roolog.convert([str(tmp_path / "noise.parquet")], str(tmp_path / "out"), schema_file=SAMPLE_SCHEMA,
                   progress=False)
    result = run_cli("train", str(tmp_path / "out"), "--smoke", "--quiet")
    assert result.returncode == 1
    assert result.stderr.startswith("roolog: error: smoke check failed on") and "eval AUC" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_smoke_on_mind(mind_out):
    summary = json.loads(run_cli("train", mind_out, "--smoke", "--time-limit", "15", "--json").stdout)
    assert summary["smoke"]["passed"], summary
    assert "history" in summary["features"]["sequences"]  # space-separated news ids: a token sequence
    assert "time" not in summary["features"]["sequences"]


@pytest.mark.parametrize("name,extra", [("trivago", []), ("ltr", ["--positive-threshold", "1"])])
def test_smoke_on_real_logs(name, extra, tmp_path, shared_datasets):
    source, schema = {"trivago": (os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"), "trivago.toml"),
                      "ltr": (os.path.join(LTR, "rank_train.csv"), "ltr_rank_train.toml")}[name]
    roolog.convert([source], str(tmp_path / "out"), schema_file=os.path.join(REPO, "schemas", schema),
                   progress=False)
    result = run_cli("train", str(tmp_path / "out"), "--smoke", "--json", *extra)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["smoke"]["passed"]


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roolog: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_one_line(sample_out, tmp_path, shared_datasets):
    _one_line_error(run_cli("train", str(tmp_path / "missing")), 2, "no such folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("train", str(tmp_path / "empty")), 1, "manifest")
    _one_line_error(run_cli("train", sample_out, "--label", "nope"), 2, "'nope'", "not a column")
    _one_line_error(run_cli("train", sample_out, "--label", "country"), 2, "request-level")
    _one_line_error(run_cli("train", sample_out, "--label", "price"), 2, "not 0/1")
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(tmp_path / "unlabelled"), key=("request_id",),
                   progress=False)
    _one_line_error(run_cli("train", str(tmp_path / "unlabelled")), 2, "no label", "--label")
    roolog.convert([os.path.join(LTR, "rank_train.csv")], str(tmp_path / "graded"), key=("query_id",),
                   order_by="row_in_query", progress=False)
    _one_line_error(run_cli("train", str(tmp_path / "graded"), "--label", "label"), 2, "not 0/1",
                    "--positive-threshold")
    _one_line_error(run_cli("train", sample_out, "--attention-heads", "3"), 2, "--attention-heads")
    if not torch.cuda.is_available():
        _one_line_error(run_cli("train", sample_out, "--device", "cuda"), 2, "no CUDA device")
