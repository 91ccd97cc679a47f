"""The repeat-user generator: time-ordered requests of users whose history slides by a few items (or stays)
between their requests - checked on the rows it makes, and converted and exploded back exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from helpers import assert_same_rows

import roolog
from roolog.synthetic import generate_repeat_users


def test_the_log_is_time_ordered_and_each_users_history_slides_or_stays(tmp_path):
    log = generate_repeat_users(users=40, requests_per_user=12, history_len=30, max_shift=3, seed=2)
    assert log.equals(generate_repeat_users(users=40, requests_per_user=12, history_len=30, max_shift=3, seed=2))
    times = log.column("request_time").cast(pa.int64()).to_numpy()
    assert (np.diff(times) >= 0).all()  # the log is in time order, users interleaved
    users = log.column("user_id").to_numpy()
    assert len(np.unique(users)) == 40 and (np.diff(users) != 0).sum() > 40
    ids = log.column("request_id").to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(ids) != 0) + 1]  # each request's first row
    per_request = log.take(pa.array(starts))
    shifts = []
    for user in np.unique(users):
        mine = per_request.filter(pc.equal(per_request["user_id"], user))
        histories = mine.column("user_history_item_ids").to_pylist()
        for before, after in zip(histories, histories[1:], strict=False):
            shift = next(s for s in range(4) if before[s:] == after[:len(after) - s])  # a window sliding on
            shifts.append(shift)
    assert set(shifts) == {0, 1, 2, 3}  # snapshots and shifts of each size
    assert 0.15 < shifts.count(0) / len(shifts) < 0.45  # about snapshot_share of them stay the same


def test_a_repeat_user_log_converts_and_explodes_exactly(tmp_path):
    import pyarrow.parquet as pq

    log = generate_repeat_users(users=30, requests_per_user=8, history_len=20, seed=3)
    pq.write_table(log, tmp_path / "log.parquet")
    report = roolog.convert([str(tmp_path / "log.parquet")], str(tmp_path / "out"), key=["request_id"],
                            order_by="position", progress=False)
    levels = {c["name"]: c["level"] for c in report["columns"]}
    assert levels["user_history_item_ids"] == levels["user_id"] == "request"
    roolog.explode(str(tmp_path / "out"), str(tmp_path / "back.parquet"))
    assert_same_rows(log, pq.read_table(tmp_path / "back.parquet"))
