"""Exported programs give the eager model's numbers on new shapes, for every model kind."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase.build import bulk
from export_helpers import (
    OLD_DESCRIPTOR,
    assert_matches,
    build_dpa2,
    build_se_a,
    eager,
    molecule_frame,
    periodic_frame,
    slab_frame,
)

from lamforge.calculators import LAMCalculator
from lamforge.deploy import DeployedCalculator, DeployedModel
from lamforge.export import export_model

# float64: exported vs eager energy to 1e-12 relative, forces and virials to 1e-10 eV/Å (eV).
ENERGY_RTOL = 1e-12
DERIVATIVE_ATOL = 1e-10


@pytest.fixture(scope="module")
def two_heads():
    return build_dpa2(heads=("water", "metal"), zero_isolated_atoms=True)


@pytest.fixture(scope="module")
def exported(two_heads, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "metal.pt2"
    metadata = export_model(two_heads, path, head="metal")
    return DeployedModel(path), metadata


def test_metadata_describes_the_inputs(exported, two_heads):
    deployed, metadata = exported
    assert deployed.metadata == metadata
    assert metadata.elements == ("H", "C", "O")
    assert metadata.head == "metal" and metadata.heads == ("water", "metal")
    assert metadata.neighbor_blocks == ((4.0, 40), (3.0, 20))
    assert metadata.precision == "float64" and metadata.model_type == "dpa2"
    assert metadata.config == two_heads.config.to_dict()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([periodic_frame()], id="periodic"),
        pytest.param([molecule_frame()], id="molecule"),
        pytest.param([slab_frame(), periodic_frame(2, num_atoms=11), molecule_frame()], id="mixed"),
        pytest.param([periodic_frame(3, num_atoms=9).repeat((2, 2, 1))], id="36-atoms"),
        pytest.param([molecule_frame()[:1]], id="one-atom"),
    ],
)
def test_exported_equals_eager(exported, two_heads, frames):
    deployed, _ = exported
    reference = eager(two_heads, frames, head="metal")
    assert_matches(deployed.evaluate(frames), reference, ENERGY_RTOL, DERIVATIVE_ATOL)


def test_neighbour_lists_of_any_width_up_to_the_cap(exported, two_heads):
    """Used width (the runtime's), full width, and a larger cutoff's list cut to the cap agree."""
    deployed, _ = exported
    frames = [periodic_frame(4), molecule_frame()]
    reference = eager(two_heads, frames, head="metal")
    positions, types, cell, frame_index, index0, shifts0, index1, shifts1 = deployed.inputs(frames)
    assert index1.shape[1] < 20  # the runtime passes only the used slots
    base = (positions, types, cell, frame_index)
    full0 = (torch.nn.functional.pad(index0, (0, 40 - index0.shape[1]), value=-1),
             torch.nn.functional.pad(shifts0, (0, 0, 0, 40 - shifts0.shape[1])))  # fmt: skip
    full1 = (torch.nn.functional.pad(index1, (0, 20 - index1.shape[1]), value=-1),
             torch.nn.functional.pad(shifts1, (0, 0, 0, 20 - shifts1.shape[1])))  # fmt: skip
    stand_in = (full0[0][:, :20], full0[1][:, :20])
    for block0, block1 in ((full0, full1), (full0, stand_in), ((index0, shifts0), full1)):
        assert_matches(deployed(*base, *block0, *block1), reference, ENERGY_RTOL, DERIVATIVE_ATOL)
    with pytest.raises(ValueError, match="has 40 slots, more than its cap 20"):
        deployed(*base, *full0, *full0)


def test_single_head_default_and_torchscript(tmp_path):
    model = build_dpa2(OLD_DESCRIPTOR)
    export_model(model, tmp_path / "model.pt", program="torchscript")
    deployed = DeployedModel(tmp_path / "model.pt")
    assert deployed.metadata.program == "torchscript" and deployed.metadata.head == "default"
    frames = [periodic_frame(5), molecule_frame()]
    assert_matches(deployed.evaluate(frames), eager(model, frames), ENERGY_RTOL, DERIVATIVE_ATOL)


def test_se_e2_a_student(tmp_path):
    model = build_se_a()
    export_model(model, tmp_path / "student.pt2")
    deployed = DeployedModel(tmp_path / "student.pt2")
    assert deployed.metadata.model_type == "se_e2_a"
    frames = [slab_frame(), periodic_frame(6, num_atoms=13)]
    assert_matches(deployed.evaluate(frames), eager(model, frames), ENERGY_RTOL, DERIVATIVE_ATOL)


def test_float32_export_of_a_float64_model(tmp_path):
    model = build_se_a()
    export_model(model, tmp_path / "single.pt2", precision="float32")
    deployed = DeployedModel(tmp_path / "single.pt2")
    assert deployed.metadata.precision == "float32"
    output = deployed.evaluate([periodic_frame()])
    assert output.forces.dtype == torch.float32 and output.energy.dtype == torch.float64
    reference = eager(model, [periodic_frame()])
    assert_matches(output, reference, energy_rtol=1e-6, atol=1e-4)


def test_bad_head_is_a_clear_error(two_heads, tmp_path):
    with pytest.raises(ValueError, match=r"no head 'gas'.*'water', 'metal'"):
        export_model(two_heads, tmp_path / "x.pt2", head="gas")
    with pytest.raises(ValueError, match="choose one with head="):
        export_model(two_heads, tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="program must be one of"):
        export_model(two_heads, tmp_path / "x.pt2", head="water", program="onnx")
    assert not (tmp_path / "x.pt2").exists()


def test_unknown_element_and_non_deployed_file(exported, tmp_path):
    deployed, _ = exported
    with pytest.raises(ValueError, match=r"atomic numbers \[14\] are not elements"):
        deployed.evaluate(bulk("Si"))
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a deployed model"):
        DeployedModel(tmp_path / "plain.pt")


def test_calculator_equals_the_eager_calculator(exported, two_heads):
    deployed, _ = exported
    atoms = periodic_frame(7)
    atoms.calc = DeployedCalculator(deployed)
    reference = atoms.copy()
    reference.calc = LAMCalculator(two_heads, head="metal", device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(
        reference.get_potential_energy(), rel=ENERGY_RTOL
    )
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=DERIVATIVE_ATOL)
    np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=DERIVATIVE_ATOL)
    np.testing.assert_allclose(
        atoms.get_potential_energies(), reference.get_potential_energies(), rtol=ENERGY_RTOL
    )


def test_runtime_imports_no_model_or_training_code(exported):
    deployed, _ = exported
    script = textwrap.dedent(
        f"""
        import sys
        from ase.build import molecule
        from lamforge.deploy import DeployedCalculator
        atoms = molecule("CH3CH2OH")
        atoms.calc = DeployedCalculator({str(deployed.path)!r})
        print(atoms.get_potential_energy())
        loaded = sorted(name for name in sys.modules
                        if name.startswith(("lamforge.nn", "lamforge.train", "lamforge.export")))
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert np.isfinite(float(result.stdout.split()[-1]))


def test_tracing_refuses_a_branch_on_a_size(monkeypatch):
    """A size-dependent branch would be baked in silently by make_fx: the exporter refuses it."""
    from lamforge.export import build, program
    from lamforge.nn.model import empty_slot_types

    def branching(atom_types, frame_index, num_frames):
        if atom_types.shape[0] > 3:  # the sample has 12 atoms: a guard "num_atoms > 3"
            return empty_slot_types(atom_types, frame_index, num_frames)
        return atom_types

    monkeypatch.setattr(program, "empty_slot_types", branching)
    with pytest.raises(RuntimeError, match="specialised on a tensor size"):
        build.trace(program.EnergyProgram(build_se_a()))
