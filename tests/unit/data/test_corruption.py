"""Damaged shard files are reported with the dataset, array, chunk and file at fault."""

import numpy as np
import pytest
from data_helpers import frames_of, write_dataset

from lamforge.data.reader import StoreCorruptionError
from lamforge.data.store import Store
from lamforge.data.validate import ValidationConfig, validate_dataset


@pytest.fixture
def store(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    return store


def _shard(store, array):
    return store.path / "bulk" / array / "c" / "0" / "0"


def test_flipped_bytes_name_array_chunk_and_file(store):
    shard = _shard(store, "positions")
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    reader = store.reader("bulk")
    with pytest.raises(StoreCorruptionError) as caught:
        reader.read_frames([2])
    message = str(caught.value)
    assert "dataset 'bulk'" in message and "array 'positions'" in message
    assert "inner chunk 0" in message and str(shard) in message
    # The intact per-frame arrays still read.
    assert np.isfinite(reader.group["energy"][:]).all()


def test_truncated_shard_is_reported(store):
    shard = _shard(store, "forces")
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(StoreCorruptionError, match="array 'forces'.*shard file"):
        store.reader("bulk").read_frames([0, 1])
    findings = validate_dataset(store.reader("bulk"), ValidationConfig())
    corrupt = [f for f in findings if f.check == "corrupt"]
    assert len(corrupt) == 1 and corrupt[0].severity == "error"
    assert "forces" in corrupt[0].message


def test_missing_shard_file_is_an_error_of_validate(store):
    _shard(store, "positions").unlink()
    reader = store.reader("bulk")
    # A missing shard reads as fill values (NaN): validate reports the file and the NaNs.
    assert np.isnan(reader.read_frames([0]).positions).all()
    findings = validate_dataset(reader, ValidationConfig())
    checks = {f.check for f in findings if f.severity == "error"}
    assert {"missing_shard", "non_finite"} <= checks
    missing = next(f for f in findings if f.check == "missing_shard")
    assert "positions/c/0/0" in missing.message


def test_the_damaged_inner_chunk_is_named(tmp_path, shared_data):
    from lamforge.data.format import CHUNK_FRAMES, SHARD_FRAMES, DatasetInfo
    from lamforge.data.ingest import import_sources

    store = Store.open(tmp_path / "store.zarr", create=True)
    info = import_sources(
        store, DatasetInfo(name="mols"), [shared_data / "deepmd" / "nopbc" / "C1H4O2"]
    )
    assert info.num_frames > 3 * CHUNK_FRAMES
    shard = store.path / "mols" / "energy" / "c" / "0"
    data = bytearray(shard.read_bytes())
    # The shard index (at the end): one (offset, nbytes) uint64 pair per inner chunk, then crc32c.
    chunks_per_shard = SHARD_FRAMES // CHUNK_FRAMES
    index = np.frombuffer(bytes(data[-4 - 16 * chunks_per_shard : -4]), dtype="<u8").reshape(-1, 2)
    offset, nbytes = index[2]
    data[int(offset + nbytes // 2)] ^= 0xFF
    shard.write_bytes(bytes(data))
    reader = store.reader("mols")
    reader.read_frames([0, CHUNK_FRAMES + 1])  # chunks 0 and 1 are intact
    with pytest.raises(StoreCorruptionError, match=r"array 'energy': inner chunk 2 \(rows 512"):
        reader.read_frames([2 * CHUNK_FRAMES + 3])
