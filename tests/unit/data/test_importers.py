"""Importers on the real data in ../shared/data and on crafted bad input."""

import itertools
from pathlib import Path

import numpy as np
import pytest
from ase.io import iread, read
from ase.units import Bohr, Hartree

from lamforge.data.frames import stress_to_virial
from lamforge.data.importers import DataImportError, expand_sources, iter_source
from lamforge.data.units import InputUnits


def _first(source, count, **options):
    return list(itertools.islice(iter_source(source, **options), count))


def test_mptrj_stress_becomes_virial(shared_data):
    path = shared_data / "mptrj" / "mptrj-random-1k.xyz"
    frames = _first(path, 5)
    for frame, atoms in zip(frames, iread(path, index=":5"), strict=True):
        stress = atoms.calc.results["stress"]
        np.testing.assert_allclose(frame.virial, stress_to_virial(stress, atoms.cell.array))
        # Same sign convention as DeePMD: a crystal under tension (positive ASE stress trace)
        # has a negative virial trace.
        assert stress.shape == (6,)  # ASE keeps Voigt order: xx yy zz yz xz xy
        assert np.sign(np.trace(frame.virial)) == -np.sign(stress[:3].sum())
        assert frame.virial[1, 2] == pytest.approx(-stress[3] * atoms.get_volume())
        assert frame.energy == atoms.calc.results["energy"]
        assert frame.source == str(path) and frame.pbc.all()


def test_oc20_keeps_raw_forces_of_fixed_atoms(shared_data):
    path = sorted((shared_data / "oc20").glob("*.traj"))[0]
    frame = _first(path, 1)[0]
    atoms = read(path, index=0)
    fixed = atoms.constraints[0].get_indices()
    assert len(fixed) > 0
    raw = atoms.get_forces(apply_constraint=False)
    np.testing.assert_array_equal(frame.forces, raw)
    assert np.abs(frame.forces[fixed]).max() > 0  # get_forces() would have zeroed these
    assert np.abs(atoms.get_forces()[fixed]).max() == 0


def test_deepmd_systems_sets_virial_and_nopbc(shared_data):
    water = expand_sources([shared_data / "deepmd" / "water"])
    assert [s.name for s in water] == ["data_0", "data_1", "data_2", "data_3"]
    system = shared_data / "deepmd" / "water" / "data_1"
    frames = list(iter_source(system))
    sets = sorted(system.glob("set.*"))
    assert len(sets) > 1
    energies = np.concatenate([np.load(s / "energy.npy") for s in sets])
    assert len(frames) == energies.size
    np.testing.assert_array_equal([f.energy for f in frames], energies)
    last_set = sets[-1]
    np.testing.assert_array_equal(
        frames[-1].positions, np.load(last_set / "coord.npy")[-1].reshape(-1, 3)
    )
    np.testing.assert_array_equal(frames[-1].cell, np.load(last_set / "box.npy")[-1].reshape(3, 3))
    types = np.loadtxt(system / "type.raw", dtype=int)
    type_map = (system / "type_map.raw").read_text().split()
    assert type_map[types[0]] == {1: "H", 8: "O"}[int(frames[0].atomic_numbers[0])]

    virial_system = shared_data / "deepmd" / "water_virial"
    frame = _first(virial_system, 1)[0]
    np.testing.assert_array_equal(
        frame.virial, np.load(virial_system / "set.000" / "virial.npy")[0].reshape(3, 3)
    )

    for system in expand_sources([shared_data / "deepmd" / "nopbc"]):
        frame = _first(system, 1)[0]
        assert not frame.pbc.any() and not frame.cell.any() and frame.virial is None


def test_molecules_with_and_without_forces(shared_data):
    ethanol = shared_data / "molecules" / "ethanol"
    without = _first(ethanol / "test_dimers.xyz", 3)
    assert all(f.forces is None and f.energy is not None for f in without)
    with_forces = _first(ethanol / "train.xyz", 3)
    assert all(f.forces is not None and not f.pbc.any() for f in with_forces)
    assert not with_forces[0].cell.any()  # a non-periodic frame stores a zero cell


def test_units_are_converted(tmp_path):
    path = tmp_path / "hartree.xyz"
    path.write_text(
        '2\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc="F F F"\n'
        "H 0 0 0 0.1 0 0\nH 0 0 1.4 -0.1 0 0\n"
    )
    frame = _first(path, 1, units=InputUnits(energy="Hartree", length="Bohr"))[0]
    assert frame.energy == pytest.approx(-1.5 * Hartree)
    assert frame.positions[1, 2] == pytest.approx(1.4 * Bohr)
    assert frame.forces[0, 0] == pytest.approx(0.1 * Hartree / Bohr)


def test_declared_units_that_differ_are_refused(tmp_path):
    path = tmp_path / "kcal.xyz"
    path.write_text("1\nProperties=species:S:1:pos:R:3 energy=-1.0 energy_unit=kcal/mol\nH 0 0 0\n")
    with pytest.raises(DataImportError, match=r"kcal.xyz, frame 0, field 'energy_unit'"):
        _first(path, 1)
    frame = _first(path, 1, units=InputUnits(energy="kcal/mol"))[0]
    assert frame.energy == pytest.approx(-0.0433641, rel=1e-5)


def test_bad_extxyz_names_file_frame_and_field(tmp_path):
    good = "1\nProperties=species:S:1:pos:R:3 energy=-1.0\nH 0 0 0\n"
    nan_energy = "1\nProperties=species:S:1:pos:R:3 energy=nan\nH 0 0 0\n"
    path = tmp_path / "bad.xyz"
    path.write_text(good + good + nan_energy)
    with pytest.raises(DataImportError, match=r"bad.xyz, frame 2, field 'energy'.*NaN"):
        list(iter_source(path))
    truncated = tmp_path / "truncated.xyz"
    truncated.write_text(good + "3\nProperties=species:S:1:pos:R:3 energy=-1.0\nH 0 0 0\n")
    with pytest.raises(DataImportError, match=r"truncated.xyz, frame 1: cannot parse"):
        list(iter_source(truncated))


def test_bad_deepmd_names_file_and_field(tmp_path, shared_data):
    system = tmp_path / "system"
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0\n1\n")
    (system / "type_map.raw").write_text("O\nH\n")
    np.save(system / "set.000" / "coord.npy", np.zeros((2, 6)))
    np.save(system / "set.000" / "box.npy", np.tile(np.eye(3).ravel() * 5, (2, 1)))
    np.save(system / "set.000" / "energy.npy", np.zeros(2))
    np.save(system / "set.000" / "force.npy", np.zeros((2, 5)))
    with pytest.raises(DataImportError, match=r"force.npy, field 'force': expected shape"):
        list(iter_source(system))
    (system / "type_map.raw").write_text("O\nXx\n")
    with pytest.raises(DataImportError, match=r"type_map.raw: unknown element symbols \['Xx'\]"):
        list(iter_source(system))
    with pytest.raises(DataImportError, match="no such file"):
        expand_sources([tmp_path / "missing.xyz"])
    with pytest.raises(DataImportError, match="without DeePMD systems"):
        expand_sources([shared_data / "mptrj"])


def test_resume_skips_frames(shared_data):
    path = shared_data / "molecules" / "ethanol" / "test_dimers.xyz"
    all_frames = _first(path, 6)
    skipped = _first(path, 3, skip=3)
    assert [f.source_index for f in skipped] == [3, 4, 5]
    np.testing.assert_array_equal(skipped[0].positions, all_frames[3].positions)
    system = shared_data / "deepmd" / "water" / "data_1"
    frames = list(iter_source(system))
    resumed = list(iter_source(system, skip=len(frames) - 2))
    assert [f.source_index for f in resumed] == [len(frames) - 2, len(frames) - 1]
    np.testing.assert_array_equal(resumed[-1].forces, frames[-1].forces)


def test_ase_database_and_trajectory_with_extras(tmp_path, demo):
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms
    from ase.io import write

    frames = [atoms.copy() for atoms in demo["surfaces"].frames[:3]]
    for atoms, original in zip(frames, demo["surfaces"].frames[:3], strict=True):
        atoms.set_constraint(FixAtoms(indices=[0, 1]))
        results = dict(original.calc.results)
        results["magmoms"] = np.linspace(0, 1, len(atoms))
        results["charges"] = np.linspace(-1, 1, len(atoms))
        atoms.calc = SinglePointCalculator(atoms, **results)
    database = tmp_path / "frames.db"
    with ase.db.connect(database) as connection:
        for atoms in frames:
            connection.write(atoms)
    trajectory = tmp_path / "frames.traj"
    write(trajectory, frames)
    for path in (database, trajectory):
        imported = list(iter_source(path))
        assert len(imported) == 3
        for frame, atoms in zip(imported, frames, strict=True):
            np.testing.assert_allclose(frame.forces, atoms.calc.results["forces"])
            assert np.abs(frame.forces[:2]).max() > 0  # fixed atoms keep their forces
            np.testing.assert_allclose(frame.magnetic_moments, np.linspace(0, 1, len(atoms)))
            np.testing.assert_allclose(frame.charges, np.linspace(-1, 1, len(atoms)))
            np.testing.assert_array_equal(frame.pbc, [True, True, False])
            assert frame.virial is None  # slabs are not periodic in z: no stress


def _ase_vasp_examples():
    import ase

    folder = Path(ase.__file__).parent / "test" / "testdata" / "vasp"
    if not (folder / "OUTCAR_example_1").is_file():
        pytest.skip(f"ASE's VASP test files are not installed ({folder})")
    return folder


@pytest.mark.parametrize("name", ["OUTCAR_example_1", "vasprun_pstress.xml"])
def test_vasp_outputs(name):
    path = _ase_vasp_examples() / name
    frames = list(iter_source(path))
    reference = read(path, index=":")
    assert len(frames) == len(reference) >= 1
    frame, atoms = frames[-1], reference[-1]
    assert frame.energy == atoms.get_potential_energy()
    np.testing.assert_allclose(frame.forces, atoms.get_forces(apply_constraint=False))
    np.testing.assert_allclose(frame.virial, -atoms.get_stress(voigt=False) * atoms.get_volume())
