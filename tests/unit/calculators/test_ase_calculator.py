"""LAMCalculator: same numbers as the model, stress from the virial, neighbour-list agreement."""

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule

from lamforge.calculators import LAMCalculator
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.forces import evaluate
from lamforge.nn.model import DPA2Model
from lamforge.testing.reference_neighbors import model_input
from lamforge.testing.tiny_models import TINY_SPECS, tiny_dpa2_config

ELEMENTS = ("H", "C", "O", "Cu", "Au")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    with torch.no_grad():  # non-trivial biases and statistics
        for head in model.heads.values():
            head.energy_bias.copy_(torch.linspace(-3.0, 1.0, len(ELEMENTS), dtype=torch.float64))
    return model


def _structures():
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    alloy.symbols[[1, 4]] = "Au"
    alloy.rattle(0.05, seed=1)
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    slab.rattle(0.05, seed=2)
    return {"bulk": alloy, "slab": slab, "molecule": molecule("CH3OH")}


@pytest.mark.parametrize("name", ["bulk", "slab", "molecule"])
def test_rust_inputs_equal_reference_inputs(model, name):
    atoms = _structures()[name]
    rust = model_input_from_atoms([atoms], ELEMENTS, TINY_SPECS)
    reference = model_input([atoms], ELEMENTS, TINY_SPECS)
    for ours, theirs in zip(rust.neighbors, reference.neighbors, strict=True):
        assert torch.equal(ours.index, theirs.index)
        # Images of one neighbour at the same distance may come in either order: compare sets.
        for row in range(ours.index.shape[0]):
            assert {
                (int(j), tuple(s.tolist()))
                for j, s in zip(ours.index[row], ours.shifts[row], strict=True)
            } == {
                (int(j), tuple(s.tolist()))
                for j, s in zip(theirs.index[row], theirs.shifts[row], strict=True)
            }
    expected = evaluate(model, reference, forces=True, virial=True)
    got = evaluate(model, rust, forces=True, virial=True)
    torch.testing.assert_close(got.energy, expected.energy, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["bulk", "slab", "molecule"])
def test_calculator_matches_model(model, name):
    atoms = _structures()[name]
    atoms.calc = LAMCalculator(model)
    inputs = model_input([atoms], ELEMENTS, TINY_SPECS)
    expected = evaluate(model, inputs, forces=True, virial=True)
    assert atoms.get_potential_energy() == pytest.approx(
        float(expected.energy[0].detach()), abs=1e-10
    )
    np.testing.assert_allclose(atoms.get_forces(), expected.forces.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(
        atoms.get_potential_energies().sum(), atoms.get_potential_energy(), atol=1e-10
    )
    if atoms.pbc.all():
        assert atoms.get_stress().shape == (6,)
    else:
        with pytest.raises(Exception):  # noqa: B017 - ASE raises PropertyNotImplementedError
            atoms.get_stress()


def test_stress_matches_strain_derivative(model):
    atoms = _structures()["bulk"]
    atoms.calc = LAMCalculator(model)
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    step = 1e-5
    for i, j in [(0, 0), (1, 1), (0, 1), (1, 2)]:
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strain = np.eye(3)
            strain[i, j] += sign * step / 2
            strain[j, i] += sign * step / 2
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            strained.calc = LAMCalculator(model)
            energies.append(strained.get_potential_energy())
        assert stress[i, j] == pytest.approx((energies[0] - energies[1]) / (2 * step) / volume,
                                             abs=1e-7)  # fmt: skip


def test_load_from_file_and_head_choice(model, tmp_path):
    save_checkpoint(model, tmp_path / "model.pt")
    atoms = _structures()["molecule"]
    atoms.calc = LAMCalculator(tmp_path / "model.pt", head="default")
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(KeyError, match="no head 'other'"):
        LAMCalculator(model, head="other")
    unknown = molecule("NH3")
    unknown.calc = LAMCalculator(model)
    with pytest.raises(ValueError, match=r"does not know element\(s\) \['N'\]"):
        unknown.get_potential_energy()


def test_short_md_conserves_energy(model):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = _structures()["bulk"]
    atoms.calc = LAMCalculator(model)
    # Maxwell-Boltzmann momenta at 300 K: p ~ N(0, sqrt(m k T)).
    scale = np.sqrt(atoms.get_masses() * units.kB * 300.0)[:, None]
    atoms.set_momenta(np.random.default_rng(0).normal(size=(len(atoms), 3)) * scale)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    start = atoms.get_total_energy()
    dynamics.run(20)
    assert abs(atoms.get_total_energy() - start) < 1e-3 * len(atoms)


@pytest.mark.parametrize("name", ["bulk", "molecule"])
def test_skin_reuse_equals_searching_every_step(model, name):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    runs = {}
    for skin in (0.0, 1.0):
        atoms = _structures()[name]
        atoms.calc = LAMCalculator(model, skin=skin)
        scale = np.sqrt(atoms.get_masses() * units.kB * 2000.0)[:, None]
        atoms.set_momenta(np.random.default_rng(3).normal(size=(len(atoms), 3)) * scale)
        energies, forces = [], []
        dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)

        def record(a=atoms, e=energies, f=forces):
            e.append(a.get_potential_energy())
            f.append(a.get_forces().copy())

        dynamics.attach(record, interval=1)
        dynamics.run(15)
        runs[skin] = (np.array(energies), np.array(forces), atoms.calc.neighbors.searches)
    np.testing.assert_allclose(runs[1.0][0], runs[0.0][0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(runs[1.0][1], runs[0.0][1], rtol=0, atol=1e-10)
    assert runs[0.0][2] >= 16
    assert runs[1.0][2] < runs[0.0][2] / 2


@pytest.mark.parametrize("skin", [0.0, 1.0])
def test_warns_once_when_a_neighbour_cap_drops_neighbours(model, skin):
    import warnings

    normal = _structures()["bulk"]
    normal.calc = LAMCalculator(model, skin=skin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normal.get_potential_energy()  # 18 neighbours within 4 Å: nothing dropped
    # fcc at a = 2.9 Å: 42 neighbours within 4 Å (cap 40), 18 within 3 Å (cap 20).
    dense = bulk("Cu", "fcc", a=2.9, cubic=True)
    dense.calc = LAMCalculator(model, skin=skin)
    with pytest.warns(RuntimeWarning, match=r"8 pair\(s\) within 4 Å beyond max_neighbors=40\."):
        dense.get_potential_energy()
    assert dense.calc.neighbors.num_dropped == [8, 0]
    dense.rattle(0.01, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dense.get_potential_energy()  # warned once per calculator
