"""``lamforge export`` end to end: a saved multi-head model to a file the runtime evaluates."""

import numpy as np
import pytest
from ase.build import molecule

from lamforge.cli.main import main
from lamforge.deploy import DeployedModel
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.forces import evaluate
from lamforge.nn.model import DPA2Model
from lamforge.testing.tiny_models import TINY_SPECS, tiny_dpa2_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = DPA2Model(tiny_dpa2_config(["H", "C", "O"], heads=("first", "second")))
    model.heads["second"].energy_bias.fill_(-3.0)
    path = tmp_path_factory.mktemp("export-cli") / "model.pt"
    save_checkpoint(model, path)
    return model, path


def test_export_a_head_and_evaluate_it(saved, tmp_path, capsys):
    model, path = saved
    output = tmp_path / "second.pt2"
    assert main(["export", str(path), "--output", str(output), "--head", "second"]) == 0
    printed = capsys.readouterr().out
    assert "exported head 'second' of a dpa2 model (float64" in printed
    assert "check against the source model: energy" in printed
    atoms = molecule("CH3CH2OH")
    deployed = DeployedModel(output)
    assert deployed.metadata.head == "second"
    inputs = model_input_from_atoms([atoms], model.elements, TINY_SPECS)
    reference = evaluate(model, inputs, "second")
    result = deployed.evaluate(atoms)
    np.testing.assert_allclose(result.energy.numpy(), reference.energy.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(result.forces.numpy(), reference.forces.detach().numpy(), atol=1e-10)


def test_a_multi_head_model_needs_head(saved, tmp_path):
    _, path = saved
    with pytest.raises(SystemExit, match=r"heads \['first', 'second'\]; choose one with --head"):
        main(["export", str(path), "--output", str(tmp_path / "x.pt2")])
    with pytest.raises(SystemExit, match=r"no head 'third'; the model has heads \['first'"):
        main(["export", str(path), "--head", "third", "--output", str(tmp_path / "x.pt2")])
    with pytest.raises(SystemExit, match="model file not found"):
        main(["export", str(tmp_path / "missing.pt")])
