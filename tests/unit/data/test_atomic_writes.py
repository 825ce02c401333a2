"""A failed write changes nothing in the store; an interrupted import resumes or restarts."""

import numpy as np
import pytest
from data_helpers import frames_of, write_dataset

from lamforge.data.format import DatasetInfo
from lamforge.data.store import Store


class SimulatedCrashError(RuntimeError):
    pass


def _import(store, name, frames, *, fail_after=None, resume=False, overwrite=False):
    info = DatasetInfo(name=name, source=tuple(dict.fromkeys(f.source for f in frames)))
    writer = store.writer(info, resume=resume, overwrite=overwrite)
    writer.flush_atoms = 30
    for count, frame in enumerate(frames):
        if frame.source_index < writer.frames_done(frame.source):
            continue
        if fail_after is not None and count == fail_after:
            raise SimulatedCrashError(f"simulated crash before frame {count}")
        writer.add(frame)
    return writer.commit()


def _arrays(store, name):
    batch = store.reader(name).read_frames(range(store.info(name).num_frames))
    return batch.positions, batch.forces, batch.energy, batch.atom_offsets


def test_crash_leaves_store_unchanged_then_resume_equals_uninterrupted(tmp_path, demo):
    frames = frames_of(demo["bulk"]) + frames_of(demo["surfaces"])
    reference = Store.open(tmp_path / "reference.zarr", create=True)
    _import(reference, "mixed", frames)

    store = Store.open(tmp_path / "store.zarr", create=True)
    write_dataset(store, "existing", frames_of(demo["alloy"]))
    before = {
        p.relative_to(store.path): p.read_bytes() for p in store.path.rglob("*") if p.is_file()
    }
    with pytest.raises(SimulatedCrashError):
        _import(store, "mixed", frames, fail_after=9)
    after = {
        p.relative_to(store.path): p.read_bytes() for p in store.path.rglob("*") if p.is_file()
    }
    assert after == before  # nothing of the failed import is in the store
    assert store.datasets() == ["existing"]
    assert store.has_interrupted_write("mixed")

    resumed = _import(store, "mixed", frames, resume=True)
    assert resumed.num_frames == len(frames)
    for got, expected in zip(_arrays(store, "mixed"), _arrays(reference, "mixed"), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert store.index("mixed").drop("source").equals(reference.index("mixed").drop("source"))
    assert not store.has_interrupted_write("mixed")


def test_restart_discards_the_interrupted_write(tmp_path, demo):
    frames = frames_of(demo["bulk"])
    store = Store.open(tmp_path / "store.zarr", create=True)
    with pytest.raises(SimulatedCrashError):
        _import(store, "bulk", frames, fail_after=4)
    info = _import(store, "bulk", frames[:3])  # resume=False starts over
    assert info.num_frames == 3


def test_resume_refuses_other_sources(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    with pytest.raises(SimulatedCrashError):
        _import(store, "bulk", frames_of(demo["bulk"]), fail_after=4)
    with pytest.raises(ValueError, match="cannot resume"):
        _import(store, "bulk", frames_of(demo["alloy"]), resume=True)


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    old = _arrays(store, "bulk")
    with pytest.raises(SimulatedCrashError):
        _import(store, "bulk", frames_of(demo["alloy"]), fail_after=3, overwrite=True)
    for got, expected in zip(_arrays(store, "bulk"), old, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_overwrite_interrupted_between_renames_is_recovered(tmp_path, demo):
    import os

    store = Store.open(tmp_path / "store.zarr", create=True)
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    old = _arrays(store, "bulk")
    # The state an overwrite leaves if it dies after moving the old dataset aside.
    store.staging_root.mkdir(exist_ok=True)
    os.replace(store.path / "bulk", store.staging_root / "bulk.replaced")
    assert Store.open(store.path).datasets() == ["bulk"]
    for got, expected in zip(_arrays(store, "bulk"), old, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_damaged_index_is_a_clear_error(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    (store.path / "bulk" / "frame_index.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot read frame index .*frame_index.parquet"):
        store.index("bulk")
