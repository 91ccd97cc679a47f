"""Pytest fixtures shared by the tests; the shared helpers themselves live in helpers.py."""

from __future__ import annotations

import os

import pytest
from helpers import DATASETS


@pytest.fixture(scope="session")
def shared_datasets():
    if not os.path.isdir(DATASETS):
        pytest.fail(f"the shared datasets are missing at {DATASETS} (set ROOLOG_SHARED)")
    return DATASETS
