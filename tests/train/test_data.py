"""roolog.data: request batches against the shards read independently with pyarrow, TorchRec's EBC giving the
same pooled embeddings from both KJT layouts, work split over ranks and workers, --row-group-requests."""

import collections
import itertools
import json
import os
import socket
import struct
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import xxhash
from helpers import SAMPLE, manifest_without_timestamps, mind_output, run_cli, sample_output
from torch.utils.data import DataLoader
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig

import roolog
from roolog.data import RequestBatch, RequestDataset, batch_cuts, encode_ids, tokens
from roolog.errors import RoologError, UsageProblem

MASK63 = (1 << 63) - 1


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    """3 shards of row groups of at most 50 requests."""
    return sample_output(tmp_path_factory.mktemp("data") / "out", shards=3, row_group_requests=50)


@pytest.fixture(scope="module")
def one_group_out(tmp_path_factory):
    """One shard of one row group: the case where row groups alone cannot feed 4 readers."""
    out = sample_output(tmp_path_factory.mktemp("data1") / "out", shards=1)
    assert pq.ParquetFile(os.path.join(out, "part-00000.parquet")).num_row_groups == 1
    return out


@pytest.fixture(scope="module")
def mind_out(tmp_path_factory, shared_datasets):
    return mind_output(tmp_path_factory.mktemp("mind") / "out")


def shard_table(out: str) -> pa.Table:
    """Every request row of the output, in shard and row-group order, read with pyarrow alone."""
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    return pa.concat_tables(pq.read_table(os.path.join(out, f)) for f in files)


def salted_id(value, column: str, buckets: int) -> int:
    """The documented id of one value, computed with xxhash alone: xxh64 of its 8 bytes (an integer, XOR the
    column's salt) or of its UTF-8 bytes (seeded by the salt), mod buckets."""
    seed = xxhash.xxh64_intdigest(column.encode())
    if isinstance(value, str):
        return xxhash.xxh64_intdigest(value.encode(), seed=seed) % buckets
    word = struct.unpack("<Q", struct.pack("<q", value))[0] ^ seed
    return xxhash.xxh64_intdigest(struct.pack("<Q", word)) % buckets


# -- what a batch holds --------------------------------------------------------------------------------------

def test_a_batch_holds_the_shards_requests(sample_out):
    data = RequestDataset(sample_out, batch_requests=70)
    batch = next(iter(data))
    rows = shard_table(sample_out).slice(0, 70).to_pylist()
    assert batch.requests == 70 and batch.lengths.tolist() == [len(r["item_id"]) for r in rows]
    assert batch.offsets.tolist() == np.concatenate([[0], np.cumsum(batch.lengths.tolist())]).tolist()
    assert sorted(batch.labels) == ["click"] and "click" not in batch.impression_ids  # labels are not features
    assert batch.labels["click"].tolist() == [float(c) for r in rows for c in r["click"]]
    assert batch.request_ids["user_id"].values.tolist() == [r["user_id"] for r in rows]  # raw integers
    assert batch.request_ids["country"].values.tolist() == [xxhash.xxh64_intdigest(r["country"].encode()) & MASK63
                                                           for r in rows]  # strings: xxh64, top bit cleared
    history = batch.request_ids["user_history_item_ids"]
    assert history.lengths.tolist() == [len(r["user_history_item_ids"]) for r in rows]
    assert history.values.tolist() == [v for r in rows for v in r["user_history_item_ids"]]
    assert batch.impression_ids["item_id"].values.tolist() == [v for r in rows for v in r["item_id"]]
    assert torch.allclose(batch.impression_dense["price"].double(),
                          torch.tensor([v for r in rows for v in r["price"]], dtype=torch.float64))
    epoch_ms = [r["request_time"].timestamp() * 1000 for r in rows]  # a timestamp: its integer count
    assert torch.allclose(batch.request_dense["request_time"].double(), torch.tensor(epoch_ms, dtype=torch.float64),
                          rtol=1e-6)
    assert "request_id" not in batch.request_ids  # the key is not a feature unless asked for
    exploded = batch.exploded()
    assert exploded.requests == batch.impressions and exploded.lengths.eq(1).all()
    assert exploded.request_ids["user_history_item_ids"].lengths.tolist() == [
        len(r["user_history_item_ids"]) for r in rows for _ in r["item_id"]]


def test_nulls_lists_tokens_and_hashing(tmp_path):
    table = pa.table({"r": [1, 1, 2, 2, 3], "user": [5, 5, None, None, 2**64 - 1],
                      "hist": [[1, None, 3], [1, None, 3], None, None, [4, 5, 6, 7]],
                      "words": [" a  b ", " a  b ", None, None, "c"], "score": [0.5, 0.5, None, None, 1.0],
                      "item": ["x", None, "y", "z", "x"], "y": [1, 0, None, 1, 0]},
                     schema=pa.schema([("r", pa.int64()), ("user", pa.uint64()), ("hist", pa.list_(pa.int64())),
                                       ("words", pa.string()), ("score", pa.float64()), ("item", pa.string()),
                                       ("y", pa.int8())]))
    pq.write_table(table, tmp_path / "t.parquet")
    roolog.convert([str(tmp_path / "t.parquet")], str(tmp_path / "out"), key=["r"], progress=False)
    batch = next(iter(RequestDataset(str(tmp_path / "out"), labels=["y"], tokenize=["words"], max_list_length=3)))
    assert batch.lengths.tolist() == [2, 2, 1]
    user = batch.request_ids["user"]
    assert user.lengths.tolist() == [1, 0, 1] and user.values.tolist() == [5, -1]  # uint64 as int64; null: none
    hist = batch.request_ids["hist"]  # a null item left out; the last 3 items of a longer list
    assert hist.lengths.tolist() == [2, 0, 3] and hist.values.tolist() == [1, 3, 5, 6, 7]
    words = batch.request_ids["words"]
    assert words.lengths.tolist() == [2, 0, 1]
    assert words.values.tolist() == [xxhash.xxh64_intdigest(w.encode()) & MASK63 for w in "abc"]
    assert batch.request_dense["score"].tolist()[0] == 0.5 and np.isnan(batch.request_dense["score"][1].item())
    item = batch.impression_ids["item"]
    assert item.lengths.tolist() == [1, 0, 1, 1, 1]
    assert batch.labels["y"][:2].tolist() == [1.0, 0.0] and np.isnan(batch.labels["y"][2].item())
    hashed = next(iter(RequestDataset(str(tmp_path / "out"), labels=["y"], id_buckets=1000)))
    assert hashed.impression_ids["item"].values.tolist() == [salted_id(v, "item", 1000) for v in "xyzx"]
    assert hashed.request_ids["user"].values.tolist() == [salted_id(v, "user", 1000) for v in (5, -1)]


def test_encoders_agree_with_python():
    ints = pa.array([0, 7, -3, 2**40])
    assert encode_ids(ints, "c", None).tolist() == [0, 7, -3, 2**40]
    assert encode_ids(ints, "c", 997).tolist() == [salted_id(v, "c", 997) for v in ints.to_pylist()]
    assert (encode_ids(ints, "c", 1 << 20) != encode_ids(ints, "d", 1 << 20)).all()  # salted by column
    words = pa.array(["a", "b", "a"])
    assert encode_ids(words.dictionary_encode(), "c", 50).tolist() == encode_ids(words, "c", 50).tolist()
    assert encode_ids(pa.array([b"a"]), "c", None).tolist() == encode_ids(pa.array(["a"]), "c", None).tolist()
    assert tokens(pa.array(["", " a b ", None])).to_pylist() == [[], ["a", "b"], []]


def test_batch_cuts_against_a_greedy_loop():
    rng = np.random.default_rng(3)
    for _ in range(300):
        lengths = rng.integers(1, 12, rng.integers(0, 40))
        n_req = int(rng.integers(1, 10)) if rng.random() < 0.7 else None
        n_imp = int(rng.integers(1, 40)) if rng.random() < 0.7 or n_req is None else None
        cuts, size, count = [0], 0, 0  # the rule, one request at a time
        for i, n in enumerate(lengths):
            if count and n_imp is not None and size + n > n_imp:
                cuts.append(i)
                size = count = 0
            size, count = size + n, count + 1
            if (n_req is not None and count == n_req) or (n_imp is not None and size > n_imp):  # full, or over
                cuts.append(i + 1)
                size = count = 0
        assert batch_cuts(lengths, n_req, n_imp) == cuts, (lengths, n_req, n_imp)


def test_batches_are_bounded_and_run_across_row_groups(sample_out):
    batches = list(RequestDataset(sample_out, batch_impressions=400))
    assert all(b.impressions <= 400 for b in batches)  # no sample request has 400 impressions
    assert sum(b.impressions for b in batches) == 20_007
    sizes = [b.requests for b in RequestDataset(sample_out, batch_requests=120)]
    assert set(sizes[:5]) == {120}  # more requests than a row group (50) holds
    assert sum(sizes) == 2000


# -- TorchRec ------------------------------------------------------------------------------------------------

def _pooled_by_hand(ebc, rows: list[dict], impressions: list[int], features: list[str], request_level: set[str],
                    tokenized: set[str], buckets: int) -> torch.Tensor:
    """Per impression, each feature's pooled (summed) embedding, from the Arrow rows and the tables' weights."""
    out = []
    for row, n in zip(rows, impressions, strict=True):
        for i in range(n):
            parts = []
            for f in features:
                value = row[f] if f in request_level else row[f][i]
                values = value.split() if f in tokenized else value if isinstance(value, list) else [value]
                ids = [salted_id(v, f, buckets) for v in values if v is not None]
                weight = ebc.embedding_bags[f].weight
                parts.append(weight[ids].sum(0) if ids else torch.zeros(weight.shape[1]))
            out.append(torch.cat(parts))
    return torch.stack(out)


@pytest.mark.parametrize("which", ["sample", "mind"])
def test_ebc_gives_the_same_pooled_embeddings_from_both_layouts(which, sample_out, mind_out):
    out, tokenize = (sample_out, []) if which == "sample" else (mind_out, ["history"])
    buckets = 5000
    data = RequestDataset(out, batch_requests=24, id_buckets=buckets, tokenize=tokenize)
    batch = next(iter(data))
    features = [*batch.request_ids, *batch.impression_ids]
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name=f, embedding_dim=4, num_embeddings=buckets,
                                                            feature_names=[f]) for f in features])
    by_request, by_impression = batch.to_kjt("request"), batch.to_kjt("impression")
    requests, impressions = batch.requests, batch.impressions
    assert impressions > requests
    assert by_request.stride_per_key() == [requests] * len(batch.request_ids) + [impressions] * len(
        batch.impression_ids)
    rows = shard_table(out).slice(0, requests).to_pylist()
    n = [len(r[data.manifest.schema.impression[0]]) for r in rows]

    def list_length(r, f):
        return len(r[f].split()) if f in tokenize else len(r[f]) if isinstance(r[f], list) else int(r[f] is not None)

    for f in batch.request_ids:  # once per request in the request layout, once per impression in the other
        assert by_request.length_per_key()[features.index(f)] == sum(list_length(r, f) for r in rows)
        assert by_impression.length_per_key()[features.index(f)] == sum(list_length(r, f) * k
                                                                        for r, k in zip(rows, n, strict=True))
    with torch.no_grad():
        pooled = {layout: ebc(kjt).to_dict() for layout, kjt in (("request", by_request),
                                                                  ("impression", by_impression))}
        expected = _pooled_by_hand(ebc, rows, n, features, set(data.manifest.schema.request), set(tokenize),
                                   buckets)
    for f in features:
        assert pooled["request"][f].shape == (impressions, 4)
        torch.testing.assert_close(pooled["request"][f], pooled["impression"][f])
    got = torch.cat([pooled["request"][f] for f in features], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_to_kjt_refuses_what_it_cannot_do(sample_out):
    batch = next(iter(RequestDataset(sample_out, batch_requests=4)))
    with pytest.raises(UsageProblem, match="layout"):
        batch.to_kjt("flat")
    with pytest.raises(UsageProblem, match="no id feature 'price'"):
        batch.to_kjt(keys=["price"])
    kjt = batch.to_kjt(keys=["item_id", "user_id"])
    assert kjt.keys() == ["item_id", "user_id"] and kjt.stride_per_key() == [batch.impressions, 4]


# -- work split over ranks and workers -----------------------------------------------------------------------

def _read(out: str, rank: int, world: int, workers: int, epoch: int) -> list[tuple[int, list[int]]]:
    """(request id, its positions) in the order one rank's DataLoader yields them."""
    data = RequestDataset(out, columns=["request_id", "position"], shuffle=True, seed=7, rank=rank,
                          world_size=world, batch_requests=32)
    data.set_epoch(epoch)
    seen = []
    for b in DataLoader(data, batch_size=None, num_workers=workers):
        positions = b.impression_ids["position"].values.split(b.lengths.tolist())
        seen += [(r, p.tolist()) for r, p in zip(b.request_ids["request_id"].values.tolist(), positions,
                                                  strict=True)]
    return seen


@pytest.mark.parametrize("which", ["row_groups", "one_row_group"])
def test_two_ranks_of_two_workers_read_every_request_once_per_epoch(which, sample_out, one_group_out):
    out = sample_out if which == "row_groups" else one_group_out
    table = shard_table(out)
    expected = collections.Counter((r, tuple(p)) for r, p in zip(table.column("request_id").to_pylist(),
                                                                  table.column("position").to_pylist(), strict=True))
    orders = {}
    for epoch in (0, 1):
        got = collections.Counter()
        for rank in (0, 1):
            seen = _read(out, rank, 2, 2, epoch)
            assert len(seen) == 1000  # a fair share: 2,000 requests over 2 ranks (of 2 workers each)
            got.update((r, tuple(p)) for r, p in seen)
            orders[epoch, rank] = [r for r, _ in seen]
        assert got == expected  # every request, with every impression, exactly once
    assert orders[0, 0] != orders[1, 0] and orders[0, 1] != orders[1, 1]  # each epoch shuffles anew
    assert [r for r, _ in _read(out, 0, 2, 2, 0)] == orders[0, 0]  # and the same epoch alike
    if which == "row_groups":  # row groups too are dealt anew each epoch, not only the requests inside them
        data = RequestDataset(out, shuffle=True, rank=0, world_size=2)
        dealt = []
        for epoch in (0, 1):
            data.set_epoch(epoch)
            dealt.append({(s.group.path, s.group.index) for s in data.segments(0, 2)})
        assert dealt[0] != dealt[1]


def test_ranks_default_to_torch_distributed(sample_out, tmp_path):
    """Two real processes in a gloo process group: the dataset takes rank and world size from it."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import json, sys, torch.distributed as dist\n"
        "from roolog.data import RequestDataset\n"
        "dist.init_process_group('gloo')\n"
        "data = RequestDataset(sys.argv[1], columns=['request_id'])\n"
        "ids = [i for b in data for i in b.request_ids['request_id'].values.tolist()]\n"
        "print(json.dumps({'rank': data.rank, 'world': data.world_size, 'ids': ids}))\n"
        "dist.destroy_process_group()\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(script), sample_out], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "RANK": str(r), "WORLD_SIZE": "2"}) for r in (0, 1)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert [(r["rank"], r["world"]) for r in results] == [(0, 2), (1, 2)]
    assert sorted(results[0]["ids"] + results[1]["ids"]) == sorted(shard_table(sample_out).column(
        "request_id").to_pylist())
    assert not set(results[0]["ids"]) & set(results[1]["ids"])


def test_splits_follow_the_key(sample_out, one_group_out):
    def ids(out, split):
        data = RequestDataset(out, columns=["request_id"], split=split, eval_percent=20)
        return {i for b in data for i in b.request_ids["request_id"].values.tolist()}

    for out in (sample_out, one_group_out):
        held, kept = ids(out, "eval"), ids(out, "train")
        assert not held & kept and len(held | kept) == 2000 and 300 < len(held) < 500
    assert ids(sample_out, "eval") == ids(one_group_out, "eval")  # the key decides, not the layout


# -- convert --row-group-requests ----------------------------------------------------------------------------

def test_row_groups_count_requests_across_writes(tmp_path):
    from roolog.write.shards import RowGroupSize, ShardWriter

    table = pa.table({"k": pa.array(range(200), pa.int64())})
    writer = ShardWriter(str(tmp_path / "s.parquet"), table.schema, 3, RowGroupSize(requests=64))
    for batch in table.to_batches(max_chunksize=30):  # requests arrive 30 at a time
        writer.write(batch, batch.num_rows)
    writer.close()
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [64, 64, 64, 8]


def test_row_group_requests_changes_the_row_groups_and_nothing_else(tmp_path):
    sample = os.path.join(SAMPLE, "impressions.parquet")
    for name, extra in (("plain", []), ("small", ["--row-group-requests", "64"])):
        result = run_cli("convert", sample, "-o", str(tmp_path / name), "--key", "request_id", "--order-by",
                         "position", "--shards", "2", "--quiet", *extra)
        assert result.returncode == 0, result.stderr
    plain, small = tmp_path / "plain", tmp_path / "small"
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        a, b = pq.ParquetFile(plain / shard), pq.ParquetFile(small / shard)
        assert a.num_row_groups == 1 and b.num_row_groups == -(-a.metadata.num_rows // 64)
        assert [b.metadata.row_group(g).num_rows for g in range(b.num_row_groups)][:-1] == [64] * (
            b.num_row_groups - 1)
        assert a.read().equals(b.read()) and a.schema_arrow.equals(b.schema_arrow, check_metadata=True)
    before, after = manifest_without_timestamps(plain), manifest_without_timestamps(small)
    assert after["options"].pop("row_group_requests") == 64 and before["options"].pop("row_group_requests") is None
    for m in (before, after):
        for s in m["shards"]:
            del s["bytes"], s["xxh64"]
        del m["totals"]["bytes"]
    assert before == after
    for name in ("plain", "small"):
        assert run_cli("explode", str(tmp_path / name), "-o", str(tmp_path / f"{name}.parquet")).returncode == 0
    assert pq.read_table(tmp_path / "plain.parquet").equals(pq.read_table(tmp_path / "small.parquet"))
    assert run_cli("convert", sample, "-o", str(tmp_path / "bad"), "--key", "request_id",
                   "--row-group-requests", "0").returncode == 2


# -- bad input -----------------------------------------------------------------------------------------------

def test_bad_options_and_changed_shards_are_one_line_errors(sample_out, tmp_path):
    with pytest.raises(UsageProblem, match="no such folder"):
        RequestDataset(str(tmp_path / "missing"))
    with pytest.raises(UsageProblem, match="no column 'nope'"):
        RequestDataset(sample_out, columns=["nope"])
    with pytest.raises(UsageProblem, match="label 'country' is request-level"):
        RequestDataset(sample_out, labels=["country"])
    with pytest.raises(UsageProblem, match="only request-level strings"):
        RequestDataset(sample_out, tokenize=["user_id"])
    with pytest.raises(UsageProblem, match="rank 2 of world_size 2"):
        RequestDataset(sample_out, rank=2, world_size=2)
    with pytest.raises(UsageProblem, match="batch_requests must be at least 1"):
        RequestDataset(sample_out, batch_requests=0)
    table = pa.table({"r": [1, 1], "s": [{"a": 1}, {"a": 1}], "v": [1, 2]})
    pq.write_table(table, tmp_path / "struct.parquet")
    roolog.convert([str(tmp_path / "struct.parquet")], str(tmp_path / "st"), key=["r"], progress=False)
    assert RequestDataset(str(tmp_path / "st")).skipped == ["s"]  # left out, and said so
    with pytest.raises(UsageProblem, match="'s'.*cannot be a feature"):
        RequestDataset(str(tmp_path / "st"), columns=["s"])
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(tmp_path / "o"), key=["request_id"],
                   shards=2, progress=False)
    data = RequestDataset(str(tmp_path / "o"))
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(tmp_path / "o"), key=["request_id"],
                   shards=2, order_by="position", progress=False)  # republished under the dataset's feet
    with pytest.raises(RoologError, match="changed after the dataset checked it"):
        next(iter(data))
    shard = tmp_path / "o" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100] + bytes(100))
    with pytest.raises(RoologError, match="part-00000.parquet"):
        RequestDataset(str(tmp_path / "o"))  # checked against the manifest first


def test_a_partitioned_output_is_read_whole(tmp_path):
    roolog.convert([os.path.join(SAMPLE, "impressions.parquet")], str(tmp_path / "out"), key=["request_id"],
                   partition_by="country", progress=False)
    data = RequestDataset(str(tmp_path / "out"), columns=["request_id", "device"], world_size=3, rank=1)
    assert "country" not in data.features.request_ids  # the partition column lives in the path only
    ids = [i for b in data for i in b.request_ids["request_id"].values.tolist()]
    everyone = [i for r in range(3) for b in RequestDataset(str(tmp_path / "out"), columns=["request_id"],
                                                             world_size=3, rank=r)
                for i in b.request_ids["request_id"].values.tolist()]
    assert len(ids) in (666, 667) and sorted(everyone) == list(range(1_000_000, 1_002_000))


def test_partitions_share_one_label_list_and_must_agree_on_types(tmp_path):
    def day(name: str, booked: list, item: list) -> None:
        folder = tmp_path / "logs" / f"day={name}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"r": [1, 1, 2, 2], "pos": [0, 1, 0, 1], "click": [0, 1, 1, 0], "booked": booked,
                                 "item": item}), folder / "part.parquet")

    day("1", [0, 1, 0, 0], [5, 6, 7, 8])
    day("2", [0, 2, 0, 0], [1, 2, 3, 4])  # `booked` is no label here: convert guesses per partition
    roolog.convert([str(tmp_path / "logs")], str(tmp_path / "out"), key=["r"], order_by="pos", progress=False)
    data = RequestDataset(str(tmp_path / "out"))
    assert sorted(data.features.labels) == ["booked", "click"]  # the first partition's (its manifest's), for all
    assert sum(b.impressions for b in data) == 8
    (tmp_path / "csv" / "day=1").mkdir(parents=True)
    (tmp_path / "csv" / "day=2").mkdir(parents=True)
    (tmp_path / "csv" / "day=1" / "a.csv").write_text("r,pos,item\n1,0,1\n1,1,2\n")
    (tmp_path / "csv" / "day=2" / "a.csv").write_text("r,pos,item\n1,0,x\n1,1,y\n")
    roolog.convert([str(tmp_path / "csv")], str(tmp_path / "mixed"), key=["r"], order_by="pos", progress=False)
    with pytest.raises(RoologError, match="column .item. is list<element: int64> in .* but list<element: string>"):
        RequestDataset(str(tmp_path / "mixed"))


def test_the_shuffle_does_not_depend_on_how_the_path_is_spelled(sample_out):
    def first_ids(out: str) -> list[int]:
        batch = next(iter(RequestDataset(out, columns=["request_id"], shuffle=True, seed=3)))
        return batch.request_ids["request_id"].values.tolist()

    assert first_ids(sample_out) == first_ids(sample_out + "/") == first_ids(os.path.relpath(sample_out))


@pytest.mark.parametrize("ctr,what", [(0.0, "no positive labels"), (1.0, "no negative labels"),
                                      (float("nan"), "no impressions")])
def test_a_smoke_run_without_both_classes_says_so_not_auc_nan(ctr, what):
    from roolog.train.trainer import smoke_verdict

    summary = {"steps": 500, "loss_fell": True, "first_loss": 0.7, "last_loss": 0.3,
               "eval": {"auc": float("nan"), "ctr": ctr}}
    verdict = smoke_verdict(summary)
    assert not verdict["passed"] and verdict["failures"] == [
        f"the eval split has {what}, so it has no AUC; the label column may be wrong (--label)"]
    summary["eval"] = {"auc": 0.51, "ctr": 0.1}
    assert smoke_verdict(summary)["failures"] == ["eval AUC 0.5100 is not above 0.55"]


@pytest.fixture(scope="module")
def five_thousand(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    n = 5000
    lengths = [1 + (i * 7) % 5 for i in range(n)]
    pq.write_table(pa.table({"r": np.repeat(np.arange(n), lengths), "item": np.arange(sum(lengths))}),
                   root / "log.parquet")
    out = root / "out"
    roolog.convert([str(root / "log.parquet")], str(out), key=("r",), shards=3, row_group_requests=400,
                   progress=False)
    return str(out)


@pytest.mark.parametrize("options", [dict(batch_requests=833), dict(batch_requests=833, split="train"),
                                     dict(batch_impressions=1500), dict(batch_requests=97, shuffle=True),
                                     dict(batch_requests=250, workers=2)])
def test_every_rank_yields_the_same_number_of_batches(five_thousand, options):
    """5,000 requests over 3 ranks with batch_requests=833 were 2, 2 and 3 batches: a DDP job hangs on the
    third. Now each worker stops at the fewest batches its counterpart has on any rank."""
    options = dict(options)
    workers = options.pop("workers", 1)
    per_rank, requests = [], 0
    for rank in range(3):
        data = RequestDataset(five_thousand, rank=rank, world_size=3, **options)
        if workers > 1:
            loader = DataLoader(data, batch_size=None, num_workers=workers)
            batches = list(loader)
        else:
            batches = list(data)
        per_rank.append(len(batches))
        requests += sum(b.requests for b in batches)
        assert data.batches_per_rank(workers) and sum(data.batches_per_rank(workers)) == len(batches)
    assert len(set(per_rank)) == 1, per_rank
    whole = RequestDataset(five_thousand, **options)  # one rank: every request of the split
    expected = sum(b.requests for b in whole)
    assert expected - requests <= 3 * workers * (options.get("batch_requests") or 1500)  # what is left out
    assert requests > 0


def test_a_rank_with_no_data_is_an_error(five_thousand):
    with pytest.raises(UsageProblem, match="gets no batch"):
        list(RequestDataset(five_thousand, rank=0, world_size=6000))


# -- dedup: RecD's inverse KJT on a clustered output ---------------------------------------------------------

@pytest.fixture(scope="module")
def clustered_out(tmp_path_factory):
    """Repeat users whose history stays the same between requests (snapshots), clustered by user."""
    from roolog.synthetic import generate_repeat_users

    tmp = tmp_path_factory.mktemp("clustered")
    pq.write_table(generate_repeat_users(users=60, requests_per_user=20, history_len=100, snapshot_share=1.0,
                                         seed=5), tmp / "log.parquet")
    roolog.convert([str(tmp / "log.parquet")], str(tmp / "out"), key="request_id", order_by="position",
                   cluster_by="user_id", shards=1, progress=False)
    return str(tmp / "out")


def test_dedup_kjt_stores_each_distinct_request_row_once_and_pools_the_same(clustered_out):
    buckets = 1000
    data = RequestDataset(clustered_out, batch_requests=64, id_buckets=buckets)
    rows = shard_table(clustered_out).to_pylist()
    torch.manual_seed(0)
    ebc = None
    totals = collections.Counter()
    done = 0
    for batch in data:
        features = [*batch.request_ids, *batch.impression_ids]
        if ebc is None:
            ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name=f, embedding_dim=4, num_embeddings=buckets,
                                                                    feature_names=[f]) for f in features])
        plain, dedup = batch.to_kjt("request"), batch.to_kjt("request", dedup=True)
        mine = rows[done:done + batch.requests]  # the batch's requests, read independently
        done += batch.requests
        for f in batch.request_ids:  # one row per distinct (bucketed) value, lists compared exactly, by hand
            distinct = {tuple(salted_id(v, f, buckets) for v in r[f]) if isinstance(r[f], list)
                        else salted_id(r[f], f, buckets) for r in mine}
            assert dedup.stride_per_key()[features.index(f)] == len(distinct), f
            assert dedup.length_per_key()[features.index(f)] == sum(
                len(v) if isinstance(v, tuple) else 1 for v in distinct), f
        totals["plain"] += plain.length_per_key()[features.index("user_history_item_ids")]
        totals["dedup"] += dedup.length_per_key()[features.index("user_history_item_ids")]
        with torch.no_grad():
            got, want = ebc(dedup).to_dict(), ebc(batch.to_kjt("impression")).to_dict()
        for f in features:
            torch.testing.assert_close(got[f], want[f])
    assert done == len(rows)
    assert totals["dedup"] <= 0.15 * totals["plain"], totals  # issue 25's target on snapshot histories


def test_pooled_is_the_ebc_on_the_impression_layout_values_and_gradients(clustered_out):
    """roolog.data.pooled(ebc, kjt) against TorchRec pooling the impression layout (every feature copied per
    impression, no inverse_indices): the same KeyedTensor and the same gradients of every table, with a table
    shared by a request and an impression feature and a feature pooled by two tables (TorchRec's "f@table")."""
    from roolog.data import pooled

    batch = next(iter(RequestDataset(clustered_out, batch_requests=64, id_buckets=1000)))
    request, impression = list(batch.request_ids), list(batch.impression_ids)
    tables = [EmbeddingBagConfig(name="shared", embedding_dim=4, num_embeddings=1000,
                                 feature_names=[request[0], impression[0]])]
    tables += [EmbeddingBagConfig(name=f, embedding_dim=3, num_embeddings=1000, feature_names=[f])
               for f in request[1:] + impression[1:]]
    tables.append(EmbeddingBagConfig(name="again", embedding_dim=2, num_embeddings=1000, feature_names=[request[-1]]))
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=tables)
    weights = None
    results = {}
    for name, run in [("impression", lambda: ebc(batch.to_kjt("impression"))),
                      ("request", lambda: pooled(ebc, batch.to_kjt("request"))),
                      ("dedup", lambda: pooled(ebc, batch.to_kjt("request", dedup=True)))]:
        ebc.zero_grad()
        out = run()
        if weights is None:
            weights = torch.randn(out.values().shape)
        (out.values() * weights).sum().backward()
        results[name] = (out.keys(), out.values().detach(), [p.grad.clone() for p in ebc.parameters()])
    assert f"{request[-1]}@again" in results["impression"][0] and results["dedup"][1].shape[0] == batch.impressions
    keys, values, grads = results["impression"]
    for name in ("request", "dedup"):
        assert results[name][0] == keys
        torch.testing.assert_close(results[name][1], values)
        for got, want in zip(results[name][2], grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)  # (sums in another order)
    with torch.no_grad():  # and TorchRec's own expansion of the same dedup KJT
        torch.testing.assert_close(ebc(batch.to_kjt("request", dedup=True)).values(), values)
    weighted = EmbeddingBagCollection(tables=tables, is_weighted=True)
    with pytest.raises(UsageProblem, match="weighted"):
        pooled(weighted, batch.to_kjt("request"))


def test_distinct_rows_tell_apart_what_differs_only_in_length_or_order():
    from roolog.data import Jagged, distinct_rows

    rows = Jagged(torch.tensor([1, 1, 0, 2, 1, 1, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0, 1, 2]))
    # rows: [1] [1,0] [] [2] [1,1] [] [0] [1,2]
    distinct, inverse = distinct_rows(rows)
    as_lists = [distinct.values[a:b].tolist() for a, b in zip(distinct.offsets[:-1], distinct.offsets[1:],
                                                                strict=True)]
    original = [[1], [1, 0], [], [2], [1, 1], [], [0], [1, 2]]
    assert [as_lists[i] for i in inverse.tolist()] == original
    assert len(as_lists) == 7 and sorted(map(tuple, as_lists)) == sorted({tuple(r) for r in original})
    with pytest.raises(UsageProblem, match="needs layout='request'"):
        RequestBatch(lengths=torch.tensor([1])).to_kjt("impression", dedup=True)


@pytest.fixture(scope="module")
def clustered_groups(tmp_path_factory):
    """Repeat users clustered by user, in row groups of 100 requests."""
    from roolog.synthetic import generate_repeat_users

    tmp = tmp_path_factory.mktemp("clustered_groups")
    pq.write_table(generate_repeat_users(users=50, requests_per_user=12, history_len=10, seed=3), tmp / "log.parquet")
    roolog.convert([str(tmp / "log.parquet")], str(tmp / "out"), key="request_id", order_by="position",
                   cluster_by="user_id", shards=1, row_group_requests=100, progress=False)
    return str(tmp / "out")


def _users_read(out: str, **options) -> list[int]:
    data = RequestDataset(out, batch_requests=32, shuffle=True, **options)
    return [v for batch in data for v in batch.request_ids["user_id"].values.tolist()]


def test_keep_together_shuffles_whole_users(clustered_groups):
    rows = shard_table(clustered_groups)
    users = rows.column("user_id").to_pylist()
    groups = pq.ParquetFile(os.path.join(clustered_groups, "part-00000.parquet")).num_row_groups
    assert groups >= 5

    def runs(seq: list[int]) -> int:
        return 1 + sum(a != b for a, b in itertools.pairwise(seq))

    together = _users_read(clustered_groups, keep_together=["user_id"])
    assert sorted(together) == sorted(users)  # every request once
    # each user's requests are one run, except where a user's requests span row groups (counted by hand)
    assert runs(together) <= runs(users) + groups - 1
    # shuffled: users in another order inside the row groups too (not only the row groups moved)
    steps = set(itertools.pairwise(users))
    assert sum(step not in steps for step in itertools.pairwise(together) if step[0] != step[1]) > groups
    assert _users_read(clustered_groups, keep_together=["user_id"]) == together  # fixed by seed and epoch
    scattered = _users_read(clustered_groups)
    assert runs(scattered) > 3 * runs(users)  # a plain shuffle moves single requests

    # a user's requests keep their order: request times of each user read as they are in the shard
    data = RequestDataset(clustered_groups, batch_requests=32, shuffle=True, keep_together=["user_id"],
                          columns=["user_id", "request_time"], dense_dtype=torch.float64)
    seen: dict[int, list] = collections.defaultdict(list)
    for batch in data:
        for u, t in zip(batch.request_ids["user_id"].values.tolist(), batch.request_dense["request_time"].tolist(),
                        strict=True):
            seen[u].append(t)
    by_user: dict[int, list] = collections.defaultdict(list)
    for u, t in zip(users, rows.column("request_time").cast(pa.int64()).to_pylist(), strict=True):
        by_user[u].append(float(t))
    assert {u: sorted(ts) for u, ts in seen.items()} == {u: sorted(ts) for u, ts in by_user.items()}
    assert sum(ts != sorted(ts) for ts in seen.values()) <= groups  # only users split across row groups may interleave


def test_keep_together_needs_an_output_clustered_by_it(clustered_groups, tmp_path):
    with pytest.raises(UsageProblem, match="needs an output clustered by them first.*--cluster-by request_time"):
        RequestDataset(clustered_groups, keep_together=["request_time"])
    plain = sample_output(tmp_path / "plain")
    with pytest.raises(UsageProblem, match="clustered by nothing"):
        RequestDataset(plain, keep_together=["user_id"])
