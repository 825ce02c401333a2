"""Teacher labelling into the store, model files, the DPA-2 student preset and exploration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from lamforge.data.store import Store
from lamforge.distill.explore import (
    ExplorationConfig,
    ensemble_spread,
    explore,
    force_deviation,
)
from lamforge.distill.students import build_student, dpa2_student_config, save_model
from lamforge.distill.teacher import (
    Teacher,
    file_sha256,
    frames_from_store,
    predict_frames,
    write_labelled_dataset,
)
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.forces import evaluate
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.testing.tiny_models import tiny_dpa2_config

ELEMENTS = ("Cu", "Au")


def frames(count: int = 3):
    out = []
    for index in range(count):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 1 + index % 2))
        atoms.symbols[:: 2 + index] = "Au"
        atoms.rattle(0.05, seed=index)
        out.append(atoms)
    return out


def small_student(seed: int = 1):
    return build_student(
        "se_e2_a",
        ELEMENTS,
        seed=seed,
        overrides={"cutoff": 4.0, "max_neighbors": 40, "neurons": (4, 8), "axis_neurons": 4},
    )


def test_batched_predictions_equal_one_frame_at_a_time():
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    structures = frames(3)
    together = predict_frames(model, structures, max_atoms=12)  # splits into several batches
    for atoms, labelled in zip(structures, together, strict=True):
        inputs = model_input_from_atoms([atoms], ELEMENTS, [(4.0, 40), (3.0, 20)])
        output = evaluate(model, inputs)
        results = labelled.calc.results
        assert results["energy"] == pytest.approx(float(output.energy[0].detach()), abs=1e-10)
        np.testing.assert_allclose(results["forces"], output.forces.detach(), atol=1e-10)
        np.testing.assert_allclose(results["energies"].sum(), results["energy"], atol=1e-10)
        stress = -output.virial[0].detach().numpy() / atoms.get_volume()
        np.testing.assert_allclose(labelled.get_stress(voigt=False), stress, atol=1e-10)


def test_teacher_dataset_records_provenance(tmp_path):
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    save_checkpoint(model, tmp_path / "teacher.pt")
    teacher = Teacher.load(tmp_path / "teacher.pt")
    store = Store.open(tmp_path / "store", create=True)
    labelled = predict_frames(teacher.model, frames(3))
    info = write_labelled_dataset(store, "taught", labelled, teacher, source="unit test")
    assert info.num_frames == 3 and info.labels["forces"] == 3 and info.labels["virial"] == 3
    assert file_sha256(tmp_path / "teacher.pt") in info.level_of_theory.functional
    assert info.level_of_theory.basis == "head default"
    back = frames_from_store(store, "taught")
    np.testing.assert_allclose(back[1].calc.results["forces"], labelled[1].calc.results["forces"])
    with pytest.raises(FileExistsError, match="taught"):
        write_labelled_dataset(store, "taught", labelled, teacher, source="again")
    with pytest.raises(ValueError, match="no frames"):
        write_labelled_dataset(store, "empty", [], teacher, source="nothing")


def test_model_files_of_every_kind(tmp_path):
    se_a = small_student()
    dpa2 = DPA2Model(dpa2_student_config(ELEMENTS))
    for name, model in (("se_a.pt", se_a), ("dpa2.pt", dpa2)):
        save_model(model, tmp_path / name)
        loaded = load_model(tmp_path / name)
        assert type(loaded) is type(model)
        assert all(
            torch.equal(a, b)
            for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
        )
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="missing.pt: model file not found"):
        load_model(tmp_path / "missing.pt")


def test_dpa2_student_has_no_attention_and_is_smaller():
    config = dpa2_student_config(ELEMENTS)
    assert not config.descriptor.repformer.update_g1_has_attn
    assert not config.descriptor.repformer.update_g2_has_attn
    student = DPA2Model(config)
    assert not any("attn" in name for name, _ in student.named_parameters())
    inputs = model_input_from_atoms(frames(1), ELEMENTS, [(6.0, 80), (4.0, 30)])
    output = evaluate(student, inputs)
    assert torch.isfinite(output.forces).all()


def test_force_deviation_and_ensemble_spread():
    structures = frames(2)
    first = predict_frames(small_student(1), structures)
    second = predict_frames(small_student(2), structures)
    deviation = force_deviation(first, second)
    for index in range(2):
        difference = first[index].calc.results["forces"] - second[index].calc.results["forces"]
        assert deviation[index] == pytest.approx(np.linalg.norm(difference, axis=1).max())
    np.testing.assert_allclose(force_deviation(first, first), 0.0)
    same = small_student(1)
    np.testing.assert_allclose(ensemble_spread([same, same], structures), 0.0, atol=1e-12)
    # Two members: the spread is half the deviation (each is |F1 - F2|/2 from the mean).
    np.testing.assert_allclose(
        ensemble_spread([small_student(1), small_student(2)], structures), deviation / 2
    )
    with pytest.raises(ValueError, match="at least two"):
        ensemble_spread([same], structures)


def test_exploration_records_every_run_and_keeps_atoms():
    start = bulk("Cu", "fcc", a=3.6, cubic=True)
    start.symbols[0] = "Au"
    config = ExplorationConfig(temperatures=(300.0, 600.0), steps=6, sample_every=3, max_starts=1)
    student = small_student()
    recorded = explore(student, [start], config, seed=1)
    assert len(recorded) == 2 * 2
    for atoms in recorded:
        assert atoms.get_chemical_symbols() == start.get_chemical_symbols()
        assert np.isfinite(atoms.positions).all()
    assert not np.allclose(recorded[0].positions, start.positions)
    assert explore(student, [start], config, seed=1)[3].positions == pytest.approx(
        recorded[3].positions
    )  # seeded: reproducible
    npt = explore(student, [start], ExplorationConfig(steps=2, sample_every=2, npt=True), seed=1)
    assert len(npt) == 1
    with pytest.raises(ValueError, match="at least one starting"):
        explore(student, [], config)
    with pytest.raises(ValueError, match="sample_every"):
        ExplorationConfig(steps=5, sample_every=10)


def test_exploration_with_emt_free_start_is_not_needed():
    # The calculator is the student's: no EMT (or other) calculator on the start leaks in.
    start = bulk("Cu", "fcc", a=3.6, cubic=True)
    start.calc = EMT()
    recorded = explore(small_student(), [start], ExplorationConfig(steps=2, sample_every=2))
    assert recorded[0].calc is None


def test_a_run_that_blows_up_keeps_its_earlier_frames(monkeypatch):
    from lamforge.distill import explore as explore_module

    class BlowsUpOnSecondChunk:
        def __init__(self, atoms, *args, **kwargs):
            self.atoms = atoms
            self.calls = 0

        def run(self, steps):
            self.calls += 1
            if self.calls == 2:
                # What the neighbour search raises for the NaN positions of an exploded run.
                raise ValueError("positions contain NaN or infinite values")
            self.atoms.positions += 0.01

    monkeypatch.setattr(explore_module, "Langevin", BlowsUpOnSecondChunk)
    start = bulk("Cu", "fcc", a=3.6, cubic=True)
    config = ExplorationConfig(temperatures=(300.0, 500.0), steps=9, sample_every=3)
    recorded = explore(small_student(), [start], config)
    assert len(recorded) == 2  # one frame per temperature, then each run stopped


def test_exploration_md_runs_the_tabulated_student_with_the_same_forces():
    from lamforge.distill.explore import ExplorationConfig
    from lamforge.distill.loop import _md_driver
    from lamforge.nn.se_e2_a import SeAModel

    student = small_student().double().eval()
    assert isinstance(student, SeAModel)
    driver = _md_driver(student, ExplorationConfig())
    assert driver.config.table is not None and student.config.table is None
    assert _md_driver(student, ExplorationConfig(compressed=False)) is student
    teacher_like = DPA2Model(tiny_dpa2_config(["Cu", "Au"]))
    assert _md_driver(teacher_like, ExplorationConfig()) is teacher_like
    atoms = frames(1)[0]
    specs = sorted(set(student.descriptor.neighbor_specs().values()), reverse=True)
    inputs = model_input_from_atoms([atoms], student.elements, specs)
    nets, table = (evaluate(model, inputs) for model in (student, driver))
    torch.testing.assert_close(table.forces, nets.forces, rtol=0, atol=1e-8)
