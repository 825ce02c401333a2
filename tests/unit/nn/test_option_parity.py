"""deepmd-kit options the trained parity cases do not cover, on fresh random weights (slow).

Each case builds a tiny deepmd-kit DPA-2 with one option changed, gives it random statistics and
energy biases, saves it as a training checkpoint, loads it with ``lamforge.interop.deepmd`` and
compares energy, forces and virial of a molecule and a periodic crystal with deepmd-kit's own
forward pass. Slow because importing deepmd-kit changes torch's global thread settings.
"""

from __future__ import annotations

import json

import pytest
import torch
from ase.build import bulk, molecule

from lamforge.nn import evaluate
from lamforge.testing.reference_neighbors import model_input

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

TYPE_MAP = ["H", "C", "O"]
REPINIT = {
    "tebd_dim": 4, "rcut": 4.0, "rcut_smth": 0.5, "nsel": 40, "neuron": [4, 8], "axis_neuron": 4,
    "use_three_body": True, "three_body_sel": 20, "three_body_rcut": 3.0,
    "three_body_rcut_smth": 2.0, "three_body_neuron": [2, 4],
}  # fmt: skip
REPFORMER = {
    "rcut": 3.0, "rcut_smth": 2.5, "nsel": 20, "nlayers": 2, "g1_dim": 8, "g2_dim": 4,
    "attn2_hidden": 4, "attn2_nhead": 2, "attn1_hidden": 4, "attn1_nhead": 2, "axis_neuron": 2,
    "update_h2": True, "update_g1_has_attn": True, "update_g2_has_g1g1": True,
    "update_g2_has_attn": True, "attn2_has_gate": True, "update_style": "res_residual",
    "update_residual": 0.1,
}  # fmt: skip
CASES = {
    "type_one_side concat": {"repinit": {"type_one_side": True}},
    "type_one_side strip": {"repinit": {"type_one_side": True, "tebd_input_mode": "strip"}},
    "non-zero mean concat": {
        "repinit": {"set_davg_zero": False}, "repformer": {"set_davg_zero": False},
    },
    "non-zero mean strip": {
        "repinit": {"set_davg_zero": False, "tebd_input_mode": "strip"},
        "repformer": {"set_davg_zero": False},
    },
    "direct_dist": {"repformer": {"direct_dist": True}},
    "smooth off": {"descriptor": {"smooth": False}},
    "old style, 1/N, res_avg": {
        "repformer": {
            "update_style": "res_avg", "use_sqrt_nnei": False, "g1_out_conv": False,
            "g1_out_mlp": False,
        }
    },
    "repinit resnet_dt, tebd bias": {
        "repinit": {"resnet_dt": True}, "descriptor": {"use_tebd_bias": True},
    },
    "tebd_dim == ntypes": {"repinit": {"tebd_dim": 3}},
    "env_protection": {"descriptor": {"env_protection": 0.1}},
    "gelu repinit, silut:2.5 repformer": {
        "repinit": {"activation_function": "gelu"},
        "repformer": {"activation_function": "silut:2.5"},
    },
    "softplus repinit, sigmoid repformer": {
        "repinit": {"activation_function": "softplus"},
        "repformer": {"activation_function": "sigmoid"},
    },
    "relu6 repinit, custom_silu repformer": {
        "repinit": {"activation_function": "relu6"},
        "repformer": {"activation_function": "custom_silu"},
    },
}  # fmt: skip


def frames():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    crystal = bulk("C", "diamond", a=3.6, cubic=True)
    crystal.set_chemical_symbols("CCHHOOCH")
    crystal.rattle(0.1, seed=2)
    return [mol, crystal]


@pytest.mark.parametrize("case", list(CASES))
def test_option_matches_deepmd(case, tmp_path):
    get_model = pytest.importorskip("deepmd.pt.model.model").get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    from lamforge.interop.deepmd import load_checkpoint

    options = CASES[case]
    descriptor = {
        "type": "dpa2",
        "repinit": {**REPINIT, **options.get("repinit", {})},
        "repformer": {**REPFORMER, **options.get("repformer", {})},
        "precision": "float64",
        "seed": 1,
        **options.get("descriptor", {}),
    }
    fitting = {"neuron": [8, 8], "resnet_dt": True, "precision": "float64", "seed": 1}
    params = {"type_map": TYPE_MAP, "descriptor": descriptor, "fitting_net": fitting}
    reference = get_model(json.loads(json.dumps(params))).double()
    generator = torch.Generator().manual_seed(0)
    nonzero_mean = "set_davg_zero" in json.dumps(options)
    with torch.no_grad():
        for key, buffer in reference.named_buffers():
            if key.endswith(".mean") and nonzero_mean:
                shape = (buffer.shape[0], 1)
                buffer[..., 0] = 0.3 * torch.rand(shape, generator=generator, dtype=buffer.dtype)
            elif key.endswith(".stddev"):
                shape = (buffer.shape[0], 1, 4)
                values = 0.5 + torch.rand(shape, generator=generator, dtype=buffer.dtype)
                buffer.copy_(values.expand_as(buffer))
            elif key.endswith("out_bias"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype))
    path = tmp_path / "model.pt"
    torch.save({"model": ModelWrapper(reference, model_params=params).state_dict()}, path)
    ours = load_checkpoint(path)
    for atoms in frames():
        types = torch.tensor([TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()])[None]
        box = torch.tensor(atoms.cell.array.reshape(1, 9)) if atoms.pbc.any() else None
        expected = reference(torch.tensor(atoms.positions)[None], types, box=box)
        output = evaluate(ours, model_input([atoms], tuple(TYPE_MAP), [(4.0, 40)]))
        energy = expected["energy"].item()
        assert abs(output.energy.item() - energy) <= 1e-12 * abs(energy)
        force_scale = expected["force"].abs().max().item()
        assert (output.forces - expected["force"][0]).abs().max().item() <= 1e-10 * force_scale
        virial = output.virial[0].reshape(9) - expected["virial"][0]
        assert virial.abs().max().item() <= 1e-10 * max(1e-3, expected["virial"].abs().max().item())
