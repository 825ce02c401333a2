"""``lamforge compress`` end to end: an se_e2_a file to a tabulated one that loads and agrees."""

import numpy as np
import pytest
from ase.build import molecule

from lamforge.calculators import LAMCalculator
from lamforge.cli.main import main
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.nn.se_e2_a import SeAModel, save_se_a
from lamforge.testing.tiny_models import tiny_dpa2_config, tiny_se_a_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = SeAModel(tiny_se_a_config(("H", "C", "O"), max_neighbors=24, seed=3))
    path = tmp_path_factory.mktemp("compress-cli") / "student.pt"
    save_se_a(model, path)
    return model, path


def _energy_forces(model, atoms):
    atoms = atoms.copy()
    atoms.calc = LAMCalculator(model)
    return atoms.get_potential_energy(), atoms.get_forces()


def test_compress_writes_a_tabulated_model_that_agrees(saved, capsys):
    model, path = saved
    assert main(["compress", str(path), "--check"]) == 0
    printed = capsys.readouterr().out
    output = path.with_name("student.compressed.pt")
    assert f"wrote {output}" in printed and "check against the nets: energy" in printed
    compressed = load_model(output)
    assert isinstance(compressed, SeAModel) and compressed.config.table is not None
    atoms = molecule("CH3CH2OH")
    energy, forces = _energy_forces(model, atoms)
    energy_table, forces_table = _energy_forces(compressed, atoms)
    assert energy_table == pytest.approx(energy, rel=1e-8)
    np.testing.assert_allclose(forces_table, forces, atol=1e-8)
    with pytest.raises(SystemExit, match="already compressed"):
        main(["compress", str(output), "--output", str(path.with_name("again.pt"))])


def test_compress_refuses_what_it_cannot_do(saved, tmp_path):
    _, path = saved
    with pytest.raises(SystemExit, match="would overwrite"):
        main(["compress", str(path), "--output", str(path)])
    with pytest.raises(SystemExit, match="must be positive"):
        main(["compress", str(path), "--output", str(tmp_path / "x.pt"), "--step", "0"])
    dpa2 = tmp_path / "dpa2.pt"
    save_checkpoint(DPA2Model(tiny_dpa2_config(["H", "O"])), dpa2)
    with pytest.raises(SystemExit, match="DPA2Model; only se_e2_a"):
        main(["compress", str(dpa2)])
