import json

import numpy as np
import pytest
import zarr
from data_helpers import frames_of, write_dataset

from lamforge.data.format import (
    ARRAYS,
    COMPACT_ZSTD_LEVEL,
    FAST_ZSTD_LEVEL,
    SCHEMA_VERSION,
    DatasetInfo,
    LevelOfTheory,
)
from lamforge.data.frames import Frame
from lamforge.data.store import Store


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store.zarr", create=True)


def test_round_trip_of_every_task_with_many_flushes(store, demo):
    for task in demo.values():
        frames = frames_of(task)
        # Tiny flushes: every few frames, so shards are appended to many times.
        info = write_dataset(store, task.name, frames, flush_atoms=20, licence="MIT")
        assert info.num_frames == len(frames)
        assert info.num_atoms == sum(f.num_atoms for f in frames)
        assert info.complete and info.schema_version == SCHEMA_VERSION
        reader = store.reader(task.name)
        order = np.array([3, 0, 5, 3, 1])
        batch = reader.read_frames(order)
        assert batch.num_frames == 5
        assert batch.num_atoms == sum(frames[i].num_atoms for i in order)
        for position, frame_id in enumerate(order):
            got, expected = batch.frame(position), frames[frame_id]
            np.testing.assert_array_equal(got.positions, expected.positions)
            np.testing.assert_array_equal(got.atomic_numbers, expected.atomic_numbers)
            np.testing.assert_array_equal(got.forces, expected.forces)
            assert got.energy == expected.energy
            np.testing.assert_array_equal(got.pbc, expected.pbc)
            if expected.virial is None:
                assert got.virial is None
            else:
                np.testing.assert_array_equal(got.virial, expected.virial)
        sequential = [f for b in reader.iter_batches(frames_per_batch=4) for f in b.frames()]
        assert [f.num_atoms for f in sequential] == [f.num_atoms for f in frames]
    assert store.datasets() == sorted(demo)


def test_dtypes_attributes_and_chunking_are_as_documented(store, demo):
    write_dataset(
        store,
        "bulk",
        frames_of(demo["bulk"]),
        level_of_theory=LevelOfTheory(code="ASE", functional="EMT"),
    )
    group = zarr.open_group(store.path / "bulk", mode="r")
    attributes = dict(group.attrs)["lamforge"]
    assert attributes["complete"] is True
    assert attributes["level_of_theory"]["functional"] == "EMT"
    assert attributes["units"]["virial"] == "eV"
    assert attributes["labels"]["virial"] == 6
    root = json.loads((store.path / "zarr.json").read_text())
    assert root["attributes"]["lamforge_store"]["schema_version"] == SCHEMA_VERSION
    for spec in ARRAYS:
        if (store.path / "bulk" / spec.name).exists():
            array = group[spec.name]
            assert array.dtype == np.dtype(spec.dtype), spec.name
            metadata = json.loads((store.path / "bulk" / spec.name / "zarr.json").read_text())
            codec = metadata["codecs"][0]
            assert codec["name"] == "sharding_indexed"
            inner = [c["name"] for c in codec["configuration"]["codecs"]]
            assert inner == ["bytes", "zstd"]
    offsets = group["atom_offsets"][:]
    assert offsets[0] == 0 and offsets[-1] == attributes["num_atoms"]
    assert np.all(np.diff(offsets) > 0)


def test_zstd_levels_are_recorded_and_read_the_same(store, demo):
    """The default is the fast level; the compact level reads back the same frames."""
    frames = frames_of(demo["bulk"])
    write_dataset(store, "default", frames)
    compact = store.writer(
        DatasetInfo(name="compact", source=("x",)), zstd_level=COMPACT_ZSTD_LEVEL
    )
    for frame in frames:
        compact.add(frame)
    compact.commit()
    for dataset, level in (("default", FAST_ZSTD_LEVEL), ("compact", COMPACT_ZSTD_LEVEL)):
        for name in ("positions", "forces", "virial", "has_virial"):
            metadata = json.loads((store.path / dataset / name / "zarr.json").read_text())
            zstd = metadata["codecs"][0]["configuration"]["codecs"][1]
            assert zstd["configuration"]["level"] == level, (dataset, name)
    order = np.arange(len(frames))[::-1]
    expected, got = (
        store.reader("default").read_frames(order),
        store.reader("compact").read_frames(order),
    )
    for position in range(len(order)):
        np.testing.assert_array_equal(
            got.frame(position).positions, expected.frame(position).positions
        )
        np.testing.assert_array_equal(got.frame(position).forces, expected.frame(position).forces)
    with pytest.raises(ValueError, match="zstd_level"):
        store.writer(DatasetInfo(name="bad"), zstd_level=23)
    # An interrupted import resumes only at the level it started with.
    info = DatasetInfo(name="partial", source=("x",))
    partial = store.writer(info, zstd_level=COMPACT_ZSTD_LEVEL)
    partial.add(frames[0])
    partial.flush()
    with pytest.raises(ValueError, match="zstd level 3"):
        store.writer(DatasetInfo(name="partial", source=("x",)), resume=True)


def test_label_appearing_late_is_masked(store):
    def frame(index, forces):
        return Frame(
            positions=np.array([[0.0, 0, 0], [0, 0, 1.0]]) + index,
            atomic_numbers=np.array([1, 1]),
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            energy=None if index == 1 else -float(index),
            forces=np.full((2, 3), float(index)) if forces else None,
            source="x",
            source_index=index,
        )

    frames = [frame(i, forces=i >= 3) for i in range(6)]
    info = write_dataset(store, "late", frames, flush_atoms=4)
    assert info.labels["forces"] == 3 and info.labels["energy"] == 5
    batch = store.reader("late").read_frames(range(6))
    np.testing.assert_array_equal(batch.has_forces, [False] * 3 + [True] * 3)
    np.testing.assert_array_equal(batch.has_energy, [True, False, True, True, True, True])
    assert np.isnan(batch.forces[:6]).all() and (batch.forces[6:8] == 3).all()
    assert batch.frame(0).forces is None and batch.frame(4).forces[0, 0] == 4.0
    index = store.index("late")
    assert index["has_forces"].to_list() == [False] * 3 + [True] * 3
    assert index["max_force"][4] == pytest.approx(4 * np.sqrt(3))


def test_existing_dataset_needs_overwrite_and_names_are_checked(store, demo):
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    with pytest.raises(FileExistsError, match="bulk"):
        store.writer(DatasetInfo(name="bulk"))
    with pytest.raises(ValueError, match="invalid dataset name"):
        store.writer(DatasetInfo(name="../escape"))
    with pytest.raises(KeyError, match="no dataset 'nope'.*bulk"):
        store.reader("nope")
    writer = store.writer(DatasetInfo(name="bulk"), overwrite=True)
    for frame in frames_of(demo["alloy"])[:2]:
        writer.add(frame)
    writer.commit()
    assert store.info("bulk").num_frames == 2
    store.delete("bulk")
    assert store.datasets() == []


def test_open_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a lamforge store"):
        Store.open(tmp_path / "other", create=True)
    zarr.open_group(tmp_path / "plain", mode="w")
    with pytest.raises(ValueError, match="not a lamforge store"):
        Store.open(tmp_path / "plain")


def test_out_of_range_frame_ids(store, demo):
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    with pytest.raises(IndexError, match="6 frames"):
        store.reader("bulk").read_frames([6])


def test_writer_memory_is_bounded_by_flush_size(store, demo):
    frames = [f for task in demo.values() for f in frames_of(task)]
    writer = store.writer(DatasetInfo(name="all"))
    writer.flush_atoms = 40
    largest = max(f.num_atoms for f in frames)
    written = []
    for frame in frames:
        writer.add(frame)
        # Never more than one flush worth of atoms waits in memory.
        assert writer._buffered_atoms < 40 + largest
        written.append(writer.num_frames)
    assert written[-1] > 0 and len(set(written)) > 5  # many flushes happened during the adds
    info = writer.commit()
    assert info.num_frames == len(frames)


def test_extras_round_trip(store):
    frame = Frame(
        positions=np.array([[0.0, 0, 0], [0, 0, 1.1]]),
        atomic_numbers=np.array([6, 8]),
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        energy=-10.0,
        charges=np.array([0.3, -0.3]),
        magnetic_moments=np.array([0.0, 2.0]),
    )
    info = write_dataset(store, "co", [frame, frame])
    assert info.labels["charges"] == 2 and info.labels["magnetic_moments"] == 2
    got = store.reader("co").read_frames([1]).frame(0)
    np.testing.assert_array_equal(got.charges, [0.3, -0.3])
    np.testing.assert_array_equal(got.magnetic_moments, [0.0, 2.0])
    assert got.forces is None


def test_other_schema_versions_and_unknown_attributes_are_refused(store, demo):
    write_dataset(store, "bulk", frames_of(demo["bulk"]))
    group = zarr.open_group(store.path / "bulk", mode="r+")
    attributes = dict(group.attrs)["lamforge"]
    group.attrs["lamforge"] = {**attributes, "schema_version": 2}
    with pytest.raises(ValueError, match="schema version 2; this lamforge reads version 1"):
        store.reader("bulk")
    group.attrs["lamforge"] = {**attributes, "colour": "blue"}
    with pytest.raises(ValueError, match=r"unknown attributes \['colour'\]"):
        store.reader("bulk")
    group.attrs["lamforge"] = {**attributes, "complete": False}
    with pytest.raises(ValueError, match="not a complete lamforge dataset"):
        store.reader("bulk")
