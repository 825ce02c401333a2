"""The demo data generator: deterministic, physically sane, offsets per task."""

import numpy as np
import pytest
from ase.calculators.emt import EMT

from lamforge.data.demo import TASK_NAMES, DemoConfig, demo_tasks, label, write_extxyz

SMALL = DemoConfig(frames_per_task=6, seed=3)


@pytest.fixture(scope="module")
def tasks():
    return demo_tasks(SMALL)


def test_tasks_and_sizes(tasks):
    assert [task.name for task in tasks] == list(TASK_NAMES)
    assert [task.downstream for task in tasks] == [False, False, False, True]
    for task in tasks:
        assert len(task.frames) == SMALL.frames_per_task


def test_same_seed_same_data_other_seed_other_data(tasks):
    again = demo_tasks(SMALL)
    other = demo_tasks(DemoConfig(frames_per_task=6, seed=4))
    for first, second, third in zip(tasks, again, other, strict=True):
        assert first.energy_offsets == second.energy_offsets
        assert first.energy_offsets != third.energy_offsets
        for a, b in zip(first.frames, second.frames, strict=True):
            np.testing.assert_array_equal(a.positions, b.positions)
            np.testing.assert_array_equal(a.cell.array, b.cell.array)
            assert a.get_potential_energy() == b.get_potential_energy()
            np.testing.assert_array_equal(a.get_forces(), b.get_forces())


def test_periodicity_per_task(tasks):
    by_name = {task.name: task for task in tasks}
    for frame in by_name["bulk"].frames + by_name["alloy"].frames:
        assert frame.pbc.all()
        assert frame.calc.results["stress"].shape == (3, 3)
    for frame in by_name["surfaces"].frames:
        assert frame.pbc.tolist() == [True, True, False]
        assert "stress" not in frame.calc.results
    for frame in by_name["clusters"].frames:
        assert not frame.pbc.any()
        assert frame.cell.rank == 0


def test_alloy_is_binary_and_unseen_composition(tasks):
    by_name = {task.name: task for task in tasks}
    for frame in by_name["alloy"].frames:
        assert set(frame.get_chemical_symbols()) <= {"Cu", "Au"}
    for name in ("bulk", "surfaces", "clusters"):
        for frame in by_name[name].frames:
            assert len(set(frame.get_chemical_symbols())) == 1


def test_energy_is_emt_plus_offsets(tasks):
    for task in tasks:
        frame = task.frames[0]
        bare = frame.copy()
        bare.calc = EMT()
        offset = sum(task.energy_offsets[s] for s in frame.get_chemical_symbols())
        assert frame.get_potential_energy() == pytest.approx(
            bare.get_potential_energy() + offset, abs=1e-10
        )
    # Offsets differ between tasks, so a shared per-element bias cannot fit all of them.
    assert tasks[0].energy_offsets["Cu"] != tasks[1].energy_offsets["Cu"]


def _energy(atoms, offsets):
    return label(atoms, offsets).get_potential_energy()


@pytest.mark.parametrize("task_index", range(len(TASK_NAMES)))
def test_forces_match_finite_differences(tasks, task_index):
    task = tasks[task_index]
    frame = task.frames[1]
    forces = frame.get_forces()
    step = 1e-5
    rng = np.random.default_rng(task_index)
    for atom in rng.choice(len(frame), size=min(3, len(frame)), replace=False):
        for axis in range(3):
            plus, minus = frame.copy(), frame.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            numeric = -(_energy(plus, task.energy_offsets) - _energy(minus, task.energy_offsets))
            numeric /= 2 * step
            assert forces[atom, axis] == pytest.approx(numeric, abs=1e-6)


def test_stress_matches_strain_derivative(tasks):
    task = tasks[0]
    frame = task.frames[2]
    stress = frame.calc.results["stress"]
    step = 1e-6
    volume = frame.get_volume()
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        energies = []
        for sign in (1, -1):
            strained = frame.copy()
            deformation = np.eye(3)
            deformation[i, j] += sign * step
            strained.set_cell(frame.cell.array @ deformation, scale_atoms=True)
            energies.append(_energy(strained, task.energy_offsets))
        # sigma_ij = (1/V) dE/d(eps_ij) with the symmetric stress of ASE.
        numeric = (energies[0] - energies[1]) / (2 * step) / volume
        assert stress[i, j] == pytest.approx(numeric, abs=1e-7)


def test_extxyz_roundtrip(tasks, tmp_path):
    from ase.io import read

    path = write_extxyz(tasks[1], tmp_path / "surfaces.extxyz")
    frames = read(path, index=":")
    assert len(frames) == len(tasks[1].frames)
    for written, original in zip(frames, tasks[1].frames, strict=True):
        np.testing.assert_allclose(
            written.get_forces(), original.get_forces(), atol=1e-7
        )  # 8 decimals
        assert written.get_potential_energy() == pytest.approx(original.get_potential_energy())
        assert written.pbc.tolist() == original.pbc.tolist()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("kwargs", [{"frames_per_task": 0}, {"offset_scale": -1.0}])
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        DemoConfig(**kwargs)
