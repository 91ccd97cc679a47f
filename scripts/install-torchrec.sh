#!/usr/bin/env bash
# TorchRec for roolog.data's RequestBatch.to_kjt (optional), into the active Python, beside torch 2.13.0
# (the train extra). torchrec 1.8.0 is the last release for torch 2.13; its dependency on the CUDA build of
# fbgemm-gpu (500 MB, and it clashes with the CPU torch) is replaced by fbgemm-gpu-cpu, so torchrec itself
# goes in with --no-deps and its other dependencies are named here. On a CUDA machine, install
# fbgemm-gpu==1.8.0 (the CUDA build matching your torch) instead of fbgemm-gpu-cpu.
set -euo pipefail
python -m pip install --quiet "torch==2.13.0" "fbgemm-gpu-cpu==1.8.0"
python -m pip install --quiet --no-deps "torchrec==1.8.0"
python -m pip install --quiet tensordict "torchmetrics==1.0.3" pyre-extensions iopath
python -c "import torch, torchrec; assert torch.__version__.startswith('2.13.0'), torch.__version__"
