import numpy as np
import pytest
from ase.data import chemical_symbols
from data_helpers import frames_of, write_dataset

from lamforge.data.export import export_deepmd, export_extxyz
from lamforge.data.importers import expand_sources, iter_source
from lamforge.data.plots import plot_dataset, table_position
from lamforge.data.stats import Distribution, dataset_stats
from lamforge.data.store import Store


@pytest.fixture
def store(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    for name in ("bulk", "clusters"):
        write_dataset(store, name, frames_of(demo[name]))
    return store


def test_stats_match_the_frames(store, demo):
    frames = frames_of(demo["bulk"])
    stats = dataset_stats(store.reader("bulk"))
    assert stats.num_frames == 6 and stats.num_atoms == sum(f.num_atoms for f in frames)
    assert sum(e["atoms"] for e in stats.elements.values()) == stats.num_atoms
    for symbol, counts in stats.elements.items():
        frames_with = sum(symbol in a.get_chemical_symbols() for a in demo["bulk"].frames)
        assert counts["frames"] == frames_with
    magnitudes = np.concatenate([np.linalg.norm(f.forces, axis=1) for f in frames])
    assert stats.force_magnitude.count == magnitudes.size
    assert stats.force_magnitude.maximum == pytest.approx(magnitudes.max())
    assert sum(stats.force_magnitude.counts) == magnitudes.size
    per_atom = [f.energy / f.num_atoms for f in frames]
    assert stats.energy_per_atom.mean == pytest.approx(np.mean(per_atom))
    assert stats.periodicity == {"TTT": 6}
    assert stats.splits == {"unassigned": 6} and stats.duplicates == 0


def test_distribution_ignores_nan_and_handles_empty():
    distribution = Distribution.of(np.array([1.0, np.nan, 3.0]), bins=4)
    assert distribution.count == 2 and distribution.mean == 2.0 and sum(distribution.counts) == 2
    assert Distribution.of(np.array([])).count == 0


def test_plots_are_png(store, tmp_path):
    paths = plot_dataset(dataset_stats(store.reader("clusters")), tmp_path / "plots")
    assert len(paths) == 4
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_periodic_table_layout():
    assert table_position(1) == (0, 0) and table_position(2) == (0, 17)
    assert table_position(6) == (1, 13) and table_position(26) == (3, 7)
    assert table_position(72) == (5, 3) and table_position(57) == (8, 2)
    assert table_position(118) == (6, 17) and table_position(103) == (9, 16)
    positions = {table_position(z) for z in range(1, 119)}
    assert len(positions) == 118


def _import(store, name, sources):
    sources = expand_sources(sources)
    from lamforge.data.format import DatasetInfo

    writer = store.writer(DatasetInfo(name=name, source=tuple(map(str, sources))))
    for source in sources:
        for frame in iter_source(source):
            writer.add(frame)
    return writer.commit()


def _all(store, name):
    reader = store.reader(name)
    return reader.read_frames(range(reader.num_frames))


def test_extxyz_round_trip_keeps_labels(store, tmp_path):
    for name in ("bulk", "clusters"):
        path = tmp_path / f"{name}.xyz"
        assert export_extxyz(store.reader(name), path) == 6
        _import(store, f"{name}_again", [path])
        before, after = _all(store, name), _all(store, f"{name}_again")
        np.testing.assert_allclose(after.positions, before.positions, atol=1e-7)
        np.testing.assert_allclose(after.forces, before.forces, atol=1e-7)
        np.testing.assert_allclose(after.energy, before.energy, rtol=1e-12)
        np.testing.assert_array_equal(after.pbc, before.pbc)
        if name == "bulk":
            np.testing.assert_allclose(after.virial, before.virial, atol=1e-6)
        else:
            assert after.virial is None


def test_deepmd_round_trip(shared_data, tmp_path):
    store = Store.open(tmp_path / "store.zarr", create=True)
    _import(
        store,
        "water",
        [shared_data / "deepmd" / "water_virial", shared_data / "deepmd" / "nopbc" / "C1H4O2"],
    )
    output = tmp_path / "exported"
    assert export_deepmd(store.reader("water"), output, set_size=7) == 2
    systems = sorted(p.name for p in output.iterdir())
    assert systems == ["CH4O2_0", "H256O128_0"]
    assert (output / "CH4O2_0" / "nopbc").is_file()
    assert (output / "H256O128_0" / "set.004" / "virial.npy").is_file()  # 30 frames, 7 per set
    _import(store, "again", [output / "H256O128_0", output / "CH4O2_0"])
    before, after = _all(store, "water"), _all(store, "again")
    np.testing.assert_array_equal(after.positions, before.positions)
    np.testing.assert_array_equal(after.forces, before.forces)
    np.testing.assert_array_equal(after.virial, before.virial)
    np.testing.assert_array_equal(after.has_virial, before.has_virial)
    np.testing.assert_array_equal(after.atomic_numbers, before.atomic_numbers)
    with pytest.raises(FileExistsError):
        export_deepmd(store.reader("water"), output)


def test_extxyz_round_trip_of_extras(tmp_path):
    from lamforge.data.frames import Frame

    store = Store.open(tmp_path / "s.zarr", create=True)
    frame = Frame(
        positions=np.array([[0.0, 0, 0], [0, 0, 1.1]]),
        atomic_numbers=np.array([6, 8]),
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        energy=-10.0,
        forces=np.array([[0.0, 0, 0.5], [0, 0, -0.5]]),
        charges=np.array([0.3, -0.3]),
        magnetic_moments=np.array([0.0, 2.0]),
    )
    write_dataset(store, "co", [frame])
    export_extxyz(store.reader("co"), tmp_path / "co.xyz")
    again = next(iter_source(tmp_path / "co.xyz"))
    np.testing.assert_allclose(again.charges, frame.charges)
    np.testing.assert_allclose(again.magnetic_moments, frame.magnetic_moments)
    np.testing.assert_allclose(again.forces, frame.forces)


def test_deepmd_kit_reads_the_export(shared_data, tmp_path, demo):
    """The reference implementation's own loader reads our DeePMD export with the same values."""
    deepmd_data = pytest.importorskip("deepmd.utils.data")
    store = Store.open(tmp_path / "store.zarr", create=True)
    _import(
        store,
        "mixed",
        [shared_data / "deepmd" / "water_virial", shared_data / "deepmd" / "nopbc" / "C4H3O1"],
    )
    write_dataset(store, "bulk", frames_of(demo["bulk"]))  # virials converted from ASE stress
    for name in ("mixed", "bulk"):
        output = tmp_path / f"{name}_dp"
        export_deepmd(store.reader(name), output)
        batch = _all(store, name)
        frames = batch.frames()
        type_map = list(store.info(name).elements)
        for system in sorted(output.iterdir()):
            data = deepmd_data.DeepmdData(
                str(system), type_map=type_map, shuffle_test=False, sort_atoms=False
            )
            data.add("energy", 1, atomic=False, must=False, high_prec=True)
            data.add("force", 3, atomic=True, must=False, high_prec=False)
            data.add("virial", 9, atomic=False, must=False, high_prec=False)
            loaded = data.get_test()
            coords = loaded["coord"].reshape(len(loaded["energy"]), -1, 3)
            # Match loaded frames to stored ones by position (frames are grouped per system).
            for row in range(coords.shape[0]):
                frame = next(
                    f
                    for f in frames
                    if f.positions.shape == coords[row].shape
                    and np.allclose(f.positions, coords[row])
                )
                assert loaded["energy"][row, 0] == pytest.approx(frame.energy, rel=1e-12)
                np.testing.assert_allclose(
                    loaded["force"][row].reshape(-1, 3), frame.forces, rtol=1e-6, atol=1e-8
                )
                symbols = [type_map[t] for t in loaded["type"][row]]
                assert symbols == [chemical_symbols[z] for z in frame.atomic_numbers]
                if frame.virial is not None:
                    assert loaded["find_virial"] == 1
                    np.testing.assert_allclose(
                        loaded["virial"][row].reshape(3, 3), frame.virial, rtol=1e-6, atol=1e-8
                    )
                    np.testing.assert_allclose(loaded["box"][row].reshape(3, 3), frame.cell)
                else:
                    assert loaded["find_virial"] == 0
