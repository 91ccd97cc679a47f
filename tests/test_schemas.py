"""The bundled schemas/ agree with the data: convert --schema accepts them, and inference finds the same."""

import json
import os

import pytest
from helpers import LTR, MIND, REPO, SAMPLE, TRIVAGO

import roolog
from roolog.group.schema import load_schema

BUNDLED = {
    "sample.toml": os.path.join(SAMPLE, "impressions.parquet"),
    "mind.toml": os.path.join(MIND, "impressions_exploded.parquet"),
    "trivago.toml": os.path.join(TRIVAGO, "clickout_impressions_exploded.csv"),
    "ltr_rank_train.toml": os.path.join(LTR, "rank_train.csv"),
}


def test_every_bundled_schema_is_checked():
    assert set(os.listdir(os.path.join(REPO, "schemas"))) == set(BUNDLED)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_schema_matches_the_data(name, tmp_path):
    schema_file = os.path.join(REPO, "schemas", name)
    declared = load_schema(schema_file)
    roolog.convert([BUNDLED[name]], str(tmp_path / "declared"), schema_file=schema_file, progress=False)
    roolog.convert([BUNDLED[name]], str(tmp_path / "inferred"), key=declared.key, progress=False)
    for run in ("declared", "inferred"):
        with open(tmp_path / run / "_manifest.json") as fh:
            levels = json.load(fh)["schema"]
        assert set(levels["request"]) == set(declared.request), run
        assert set(levels["impression"]) == set(declared.impression), run
    assert declared.labels and set(declared.labels) <= set(declared.impression)
