import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from lamforge.data.frames import (
    Frame,
    FrameError,
    frame_from_atoms,
    frame_to_atoms,
    stress_to_virial,
    virial_to_stress,
)


def test_virial_is_minus_stress_times_volume_and_matches_strain_derivative():
    # Oracle: virial_ab = -dE/d(strain_ab) at zero strain, by central finite differences.
    atoms = bulk("Cu", "fcc", a=3.5, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    virial = stress_to_virial(atoms.get_stress(voigt=False), atoms.cell.array)
    step = 1e-5
    for a, b in ((0, 0), (1, 1), (0, 1), (1, 2)):
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.calc = EMT()
            strain = np.eye(3)
            strain[a, b] += sign * step / 2
            strain[b, a] += sign * step / 2
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            energies.append(strained.get_potential_energy())
        derivative = (energies[0] - energies[1]) / (2 * step)
        assert virial[a, b] == pytest.approx(-derivative, rel=1e-4, abs=1e-6)


def test_voigt_and_matrix_stress_agree_and_round_trip():
    cell = np.diag([3.0, 4.0, 5.0]) + 0.1
    matrix = np.array([[1.0, 0.2, 0.3], [0.2, 2.0, 0.4], [0.3, 0.4, 3.0]])
    voigt = np.array([1.0, 2.0, 3.0, 0.4, 0.3, 0.2])
    np.testing.assert_allclose(stress_to_virial(voigt, cell), stress_to_virial(matrix, cell))
    np.testing.assert_allclose(virial_to_stress(stress_to_virial(matrix, cell), cell), matrix)
    with pytest.raises(FrameError, match="'stress'"):
        stress_to_virial(np.zeros(4), cell)


def test_ase_round_trip_keeps_labels(demo):
    for task in demo.values():
        for atoms in task.frames:
            frame = frame_from_atoms(atoms)
            again = frame_from_atoms(frame_to_atoms(frame))
            np.testing.assert_array_equal(again.positions, atoms.positions)
            assert again.energy == atoms.get_potential_energy()
            np.testing.assert_allclose(again.forces, atoms.get_forces())
            if atoms.pbc.all():
                np.testing.assert_allclose(
                    virial_to_stress(again.virial, again.cell), atoms.get_stress(voigt=False)
                )
            else:
                assert again.virial is None


def _frame(**changes):
    base = dict(
        positions=np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]],
        atomic_numbers=np.array([1, 8]),
        cell=np.eye(3) * 5,
        pbc=np.array([True, True, True]),
        energy=-1.0,
        forces=np.zeros((2, 3)),
    )
    base.update(changes)
    return Frame(**base)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"positions": np.zeros((3, 3))}, "positions"),
        ({"forces": np.zeros((2, 2))}, "forces"),
        ({"atomic_numbers": np.array([0, 8])}, "atomic_numbers"),
        ({"energy": float("nan")}, "energy"),
        ({"forces": np.full((2, 3), np.inf)}, "forces"),
        ({"cell": np.zeros((3, 3))}, "cell"),
        ({"cell": np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]])}, "cell"),
        ({"pbc": np.array([False] * 3), "cell": np.zeros((3, 3)), "virial": np.eye(3)}, "virial"),
    ],
)
def test_check_names_the_bad_field(changes, field):
    _frame().check()
    with pytest.raises(FrameError, match=f"field '{field}'"):
        _frame(**changes).check()
