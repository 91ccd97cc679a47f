"""roolog train: layouts agree, every impression once per epoch, smoke passes on real data and fails on noise,
bad input gets one line."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import LTR, REPO, SAMPLE, SAMPLE_SCHEMA, TRIVAGO, mind_output, run_cli, sample_output
from torch.utils.data import DataLoader

import roolog
from roolog.cli import main as cli_main
from roolog.train.features import build_spec, shard_files
from roolog.train.metrics import auc, click_metrics
from roolog.train.model import ModelBatch, RequestAwareModel
from roolog.train.trainer import TrainConfig, load_checkpoint, model_config

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    """The sample log in 3 shards of several row groups each, so that work really splits."""
    return sample_output(tmp_path_factory.mktemp("train") / "out", shards=3, row_group_bytes=200_000)


@pytest.fixture(scope="module")
def mind_out(tmp_path_factory, shared_datasets):
    return mind_output(tmp_path_factory.mktemp("mind") / "out")


def _trained_model(out: str, steps: int = 5) -> tuple[RequestAwareModel, object]:
    """A model after a few steps (so weights are not at their symmetric start) and its feature spec."""
    cfg = TrainConfig(max_steps=steps, progress=False, save=None)
    spec = build_spec(out)
    torch.manual_seed(0)
    model = RequestAwareModel(model_config(spec, cfg))
    opt = torch.optim.SGD([p for p in model.parameters() if p is not model.embedding.weight], lr=0.1)
    batches = (ModelBatch.of(b, spec) for b in spec.dataset(out, 200, batch_impressions=256))
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
    requests = next(iter(spec.dataset(out, 200, batch_requests=64)))
    batch, exploded = ModelBatch.of(requests, spec), ModelBatch.of(requests.exploded(), spec)
    assert batch.requests == 64 and exploded.requests == batch.impressions > 64
    if spec.sequences:  # every impression carries its own copy of the history
        lengths = batch.sequence_offsets[0].diff()
        assert int(exploded.sequence_offsets[0][-1]) == int((lengths * requests.lengths).sum())
    with torch.no_grad():
        by_request, by_impression = model(batch), model(exploded)
    assert by_request.shape == (batch.impressions,)
    torch.testing.assert_close(by_request, by_impression, rtol=1e-5, atol=1e-5)
    assert by_request.std() > 1e-3  # not a constant the two layouts would trivially agree on


def test_datasets_of_both_layouts_yield_the_same_logits(sample_out):
    model, spec = _trained_model(sample_out)
    with torch.no_grad():
        logits = {layout: torch.cat([model(ModelBatch.of(b, spec)) for b in spec.dataset(
                  sample_out, 200, exploded=layout == "impression", batch_impressions=300)])
                  for layout in ("request", "impression")}
    torch.testing.assert_close(logits["request"], logits["impression"], rtol=1e-5, atol=1e-5)


def _impressions(batches, spec) -> collections.Counter:
    """Each impression as (its features, its request's features, label): a multiset to compare."""
    seen = collections.Counter()
    for b in batches:
        b = ModelBatch.of(b, spec)
        rows = b.request_index
        request = torch.cat([b.request_ids, b.request_dense.to(torch.float64).mul(1e6).round().long()], 1)[rows]
        dense = b.impression_dense.to(torch.float64).mul(1e6).round().long()  # stats may differ in the last bit
        for r, i, d, y in zip(request.tolist(), b.impression_ids.tolist(), dense.tolist(),
                              b.labels.tolist(), strict=True):
            seen[(tuple(r), tuple(i), tuple(d), y)] += 1
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_every_impression_once_per_epoch_across_workers(sample_out, workers):
    spec = build_spec(sample_out)
    _, _, paths = shard_files(sample_out)
    manifest = roolog.read_manifest(sample_out)
    assert sum(pq.ParquetFile(p).num_row_groups for p in paths) >= 4  # really split
    everything = collections.Counter()
    for split in ("train", "eval"):
        dataset = spec.dataset(sample_out, 200, split=split, shuffle=True, batch_impressions=500)
        orders = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            batches = list(DataLoader(dataset, batch_size=None, num_workers=workers))
            orders.append([b.labels["click"].tolist() for b in batches])
            got = _impressions(batches, spec)
            if epoch == 0:
                first = got
            assert got == first  # the same impressions each epoch...
        assert orders[0] != orders[1]  # ...in a new order
        everything += first
    assert sum(everything.values()) == sum(s.impressions for s in manifest.shards) == 20_007
    single = _impressions(spec.dataset(sample_out, 200, batch_impressions=10_000), spec)
    assert everything == single


def test_eval_split_follows_the_key_not_the_shard_layout(sample_out, tmp_path):
    other = tmp_path / "one_shard"
    sample_output(other, shards=1)
    counts = []
    for out in (sample_out, str(other)):
        spec = build_spec(out)
        batches = spec.dataset(out, 200, split="eval", eval_percent=10)
        counts.append(_impressions(batches, spec))
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
    y, p = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.9, 0.2, 0.6, 0.4])
    expected_loss = -(np.log(0.9) + np.log(0.8) + np.log(0.6) + np.log(0.6)) / 4
    got = click_metrics(y, p)
    assert got["log_loss"] == pytest.approx(expected_loss)
    assert got["ne"] == pytest.approx(expected_loss / np.log(2))  # base rate 0.5: entropy ln 2
    assert got["calibration"] == pytest.approx(2.1 / 2) and got["auc"] == 1.0


def test_smoke_passes_on_the_sample(sample_out, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    for busy in (False, True):  # the second run with every core busy: the same steps, the same AUC
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
                ] if busy else []
        try:
            result = run_cli("train", sample_out, "--smoke", "--json", "--device", "cpu", "--metrics-file",
                             str(metrics), "--save", str(tmp_path / "model"))  # the second replaces the checkpoint
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["smoke"] == {"passed": True, "failures": []}
    assert summary["eval"]["auc"] > 0.55 and summary["loss_fell"]
    assert summary["impressions_per_s"] > 0 and summary["device"] == "cpu"
    assert summary["features"]["sequences"] == ["user_history_item_ids"]
    assert [json.loads(line)["eval"]["auc"] for line in metrics.read_text().splitlines()] == \
        [summary["eval"]["auc"]] * 2  # appended, and seeded runs agree
    model, spec = load_checkpoint(str(tmp_path / "model"))
    batch = ModelBatch.of(next(iter(spec.dataset(sample_out, 200))), spec)
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
    summary = json.loads(run_cli("train", mind_out, "--smoke", "--json").stdout)  # a step budget: no clock
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
    if name == "trivago":  # its request-level `reference` is the clicked hotel: it passes without the leak too
        result = run_cli("train", str(tmp_path / "out"), "--smoke", "--json", "--exclude", "reference")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["smoke"]["passed"]


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roolog: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI run in this process (torch imported once, not once per check); the entry point's own
    process is run_cli's."""
    result = CliRunner().invoke(cli_main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_bad_input_one_line(sample_out, tmp_path, shared_datasets):
    _one_line_error(run_cli("train", str(tmp_path / "missing")), 2, "no such folder")  # the installed command
    (tmp_path / "empty").mkdir()
    _one_line_error(_in_process("train", str(tmp_path / "empty")), 1, "manifest")
    _one_line_error(_in_process("train", sample_out, "--label", "nope"), 2, "'nope'", "not a column")
    _one_line_error(_in_process("train", sample_out, "--label", "country"), 2, "request-level")
    _one_line_error(_in_process("train", sample_out, "--label", "price"), 2, "not 0/1")
    table = pq.read_table(os.path.join(SAMPLE, "impressions.parquet")).rename_columns(  # no column named like a label
        {"click": "y"})
    pq.write_table(table, tmp_path / "unlabelled.parquet")
    roolog.convert([str(tmp_path / "unlabelled.parquet")], str(tmp_path / "unlabelled"), key=("request_id",),
                   progress=False)
    _one_line_error(_in_process("train", str(tmp_path / "unlabelled")), 2, "no label", "--label")
    roolog.convert([os.path.join(LTR, "rank_train.csv")], str(tmp_path / "graded"), key=("query_id",),
                   order_by="row_in_query", progress=False)
    _one_line_error(_in_process("train", str(tmp_path / "graded"), "--label", "label"), 2, "not 0/1",
                    "--positive-threshold")
    _one_line_error(_in_process("train", sample_out, "--attention-heads", "3"), 2, "--attention-heads")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _one_line_error(_in_process("train", sample_out, "--save", str(tmp_path / "busy")), 2, "other files")
    assert (tmp_path / "busy" / "notes.txt").exists()
    _one_line_error(_in_process("train", sample_out, "--save", sample_out), 2, "other files")  # not the data!
    _one_line_error(_in_process("train", sample_out, "--exclude", "nope"), 2, "unknown column")
    _one_line_error(_in_process("train", sample_out, "--metrics-file", str(tmp_path / "no" / "m.jsonl")), 2,
                    "does not exist")
    if not torch.cuda.is_available():
        _one_line_error(_in_process("train", sample_out, "--device", "cuda"), 2, "no CUDA device")


def test_impression_layout_and_workers_through_the_cli(sample_out):
    runs = {layout: json.loads(run_cli("train", sample_out, "--layout", layout, "--workers", "2", "--max-steps", "6",
                                       "--max-history", "7", "--device", "cpu", "--json", "--quiet").stdout)
            for layout in ("request", "impression")}
    # the same model over the same batches: equal up to float rounding, whose order the layouts (and the
    # threads of a busy machine) change; a real difference (a mis-broadcast request) is far above this
    assert runs["request"]["eval"]["auc"] == pytest.approx(runs["impression"]["eval"]["auc"], abs=1e-4)
    assert runs["request"]["impressions_seen"] == runs["impression"]["impressions_seen"] > 0
    assert runs["impression"]["layout"] == "impression"


def test_impression_level_lists_are_skipped_by_the_trainer(tmp_path):
    table = pa.table({"rid": [1, 1, 1, 2, 2, 3], "pos": [0, 1, 2, 0, 1, 0], "item": [4, 5, 6, 7, 8, 9],
                      "tags": [[1, 2], [3], [4, 5, 6], [], [7], [8, 9]], "click": [0, 1, 0, 1, 0, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    roolog.convert([str(tmp_path / "t.parquet")], str(tmp_path / "out"), key=["rid"], order_by="pos",
                   progress=False)
    spec = build_spec(str(tmp_path / "out"), eval_percent=0)
    assert "tags" in spec.skipped and "tags" not in spec.impression_ids and "item" in spec.impression_ids
    batch = ModelBatch.of(next(iter(spec.dataset(str(tmp_path / "out"), 10))), spec)
    assert batch.impression_ids.shape == (6, len(spec.impression_ids))



@pytest.fixture(scope="module")
def clustered_out(tmp_path_factory):
    """Repeat users (a history that slides or stays between requests), clustered by user."""
    from roolog.synthetic import generate_repeat_users

    tmp = tmp_path_factory.mktemp("clustered")
    pq.write_table(generate_repeat_users(users=80, requests_per_user=12, history_len=30, seed=2), tmp / "log.parquet")
    roolog.convert([str(tmp / "log.parquet")], str(tmp / "out"), key="request_id", order_by="position",
                   cluster_by="user_id", shards=2, progress=False)
    return str(tmp / "out")


def test_dedup_encodes_each_distinct_history_once_with_the_same_logits(clustered_out):
    model, spec = _trained_model(clustered_out)
    requests = next(iter(spec.dataset(clustered_out, 200, batch_requests=96)))
    plain, dedup = ModelBatch.of(requests, spec), ModelBatch.of(requests, spec, dedup=True)
    history = requests.request_ids[spec.sequences[0]]
    rows = [tuple(history.values[a:b].tolist()) for a, b in zip(history.offsets[:-1], history.offsets[1:],
                                                                 strict=True)]
    assert len(dedup.sequence_offsets[0]) - 1 == len(set(rows)) < len(rows)  # counted by hand
    assert int(dedup.sequence_offsets[0][-1]) == sum(len(r) for r in set(rows))
    with torch.no_grad():
        torch.testing.assert_close(model(dedup), model(plain), rtol=1e-5, atol=1e-5)
        assert model(plain).std() > 1e-3


def test_dedup_through_the_cli(clustered_out):
    runs = {dedup: json.loads(run_cli("train", clustered_out, *(["--dedup"] if dedup else []), "--max-steps", "6",
                                      "--device", "cpu", "--json", "--quiet").stdout) for dedup in (False, True)}
    assert runs[True]["dedup"] is True and runs[False]["dedup"] is False
    assert runs[True]["first_loss"] == pytest.approx(runs[False]["first_loss"], abs=1e-5)
    assert runs[True]["eval"]["auc"] == pytest.approx(runs[False]["eval"]["auc"], abs=1e-4)
    refused = run_cli("train", clustered_out, "--dedup", "--layout", "impression")
    assert refused.returncode == 2 and "needs --layout request" in refused.stderr


def test_keep_together_through_the_cli(clustered_out):
    run = run_cli("train", clustered_out, "--dedup", "--keep-together", "user_id", "--max-steps", "4",
                  "--device", "cpu", "--json", "--quiet")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["keep_together"] == ["user_id"] and summary["dedup"] is True and summary["steps"] == 4
    refused = run_cli("train", clustered_out, "--keep-together", "request_time", "--max-steps", "1")
    assert refused.returncode == 2 and "--cluster-by request_time" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
