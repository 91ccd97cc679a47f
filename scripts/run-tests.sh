#!/usr/bin/env bash
# The README's test command. On a fresh Debian machine with only Python it first installs what the tests
# need when it is missing - the project's dev, train and spark extras (into the active Python), TorchRec
# (scripts/install-torchrec.sh), Debian's chromium (the stats page is tested in a real headless browser)
# and OpenJDK 17 (Spark) - then runs pytest with the arguments given, for example:
#   bash scripts/run-tests.sh -m "not spark and not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
need() {  # need COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$2" >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$2" >/dev/null; } \
        || { echo "run-tests: cannot install $2 (needed for '$1'); install it and run again" >&2; exit 2; }
}
need chromium chromium
need java openjdk-17-jre-headless
python -c "import pytest, pytest_timeout, hypothesis, duckdb, pyspark, torch, moto.server, s3fs, roolog" 2>/dev/null \
    || python -m pip install --quiet -e ".[dev,train,spark]"
python -c "import torchrec" 2>/dev/null || bash scripts/install-torchrec.sh
exec python -m pytest "$@"
