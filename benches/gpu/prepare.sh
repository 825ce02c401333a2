#!/usr/bin/env bash
# Prepares dist/gpu-carry/ on a machine with a Rust toolchain and internet (see NOTES.md):
# the lamforge abi3 wheel, deepmd-kit 3.2.0 and the small wheels the GPU machine lacks
# (Python 3.12, manylinux x86_64), and the few data files the timings read.
# Then: run(command="bash benches/gpu/run.sh", carry=["dist/gpu-carry"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=dist/gpu-carry
rm -rf "$carry" && mkdir -p "$carry/wheels" "$carry/data"

# Our extension as one abi3 wheel (cp311-abi3 loads under 3.12); no Rust on the GPU machine.
maturin build --release --out "$carry/wheels"

# deepmd-kit and what its PyTorch backend imports, without dependency resolution (torch,
# numpy, scipy, sympy, networkx, jinja2 and triton come with torch on the GPU machine).
pip download --dest "$carry/wheels" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    deepmd-kit==3.2.0 dargs wcmatch bracex einops ml_dtypes array-api-compat h5py lmdb \
    msgpack mendeleev e3nn opt_einsum opt_einsum_fx mpich ase pyyaml tqdm \
    pytest pytest-timeout pluggy iniconfig

# The inputs of the timings, in the layout of ../shared/data (derived copies, never committed).
shared=../shared/data
mkdir -p "$carry/data/deepmd/water/data_0/set.000" "$carry/data/mptrj"
cp "$shared/deepmd/water/data_0/type.raw" "$shared/deepmd/water/data_0/type_map.raw" \
    "$carry/data/deepmd/water/data_0/"
cp "$shared/deepmd/water/data_0/set.000/coord.npy" "$shared/deepmd/water/data_0/set.000/box.npy" \
    "$carry/data/deepmd/water/data_0/set.000/"
cp "$shared/mptrj/mptrj-random-1k.xyz" "$carry/data/mptrj/"
du -sh "$carry"   # must stay under the device tool's 64 MiB carry limit
