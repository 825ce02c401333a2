#!/usr/bin/env bash
# Builds the Rust extension in place (python/lamforge/_core.abi3.so) for working from a source tree
# or a git worktree without reinstalling: then `PYTHONPATH=python python -m pytest`.
# `pip install -e .` does the same through maturin for a single checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
cargo build --quiet --package lamforge-py --profile "$profile" --features pyo3/extension-module
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c "import json,sys; print(json.load(sys.stdin)['target_directory'])")
[ "$profile" = dev ] && profile=debug
cp "$target_dir/$profile/lib_core.so" python/lamforge/_core.abi3.so
echo "built python/lamforge/_core.abi3.so ($profile)"
