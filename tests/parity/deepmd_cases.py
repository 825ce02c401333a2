"""The deepmd-kit models the parity tests train: input files for ``dp --pt train``.

Model sections use deepmd-kit's own key names (``rcut``, ``nsel``, ...): they are deepmd-kit input.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

#: MPtrj frames used as separate one-frame systems (small cells: many periodic images).
MPTRJ_FRAME_INDICES = (0, 1, 2, 3, 5, 8)


def repinit_section(**overrides: object) -> dict:
    """The repinit block of deepmd-kit's shipped small/medium water examples."""
    section = {
        "tebd_dim": 8,
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "nsel": 120,
        "neuron": [25, 50, 100],
        "axis_neuron": 12,
        "activation_function": "tanh",
        "three_body_sel": 48,
        "three_body_rcut": 4.0,
        "three_body_rcut_smth": 3.5,
        "use_three_body": True,
    }
    section.update(overrides)
    return section


def repformer_section(**overrides: object) -> dict:
    """The repformer block of deepmd-kit's shipped small water example (3 layers)."""
    section = {
        "rcut": 4.0,
        "rcut_smth": 3.5,
        "nsel": 48,
        "nlayers": 3,
        "g1_dim": 128,
        "g2_dim": 32,
        "attn2_hidden": 32,
        "attn2_nhead": 4,
        "attn1_hidden": 128,
        "attn1_nhead": 4,
        "axis_neuron": 4,
        "update_h2": False,
        "update_g1_has_conv": True,
        "update_g1_has_grrg": True,
        "update_g1_has_drrd": True,
        "update_g1_has_attn": False,
        "update_g2_has_g1g1": False,
        "update_g2_has_attn": False,
        "update_style": "res_residual",
        "update_residual": 0.01,
        "update_residual_init": "norm",
        "attn2_has_gate": True,
        "use_sqrt_nnei": True,
        "g1_out_conv": True,
        "g1_out_mlp": True,
    }
    section.update(overrides)
    return section


def descriptor_section(repinit: dict, repformer: dict, **overrides: object) -> dict:
    """A DPA-2 descriptor section in float64 with a fixed seed."""
    section = {
        "type": "dpa2",
        "repinit": repinit,
        "repformer": repformer,
        "precision": "float64",
        "add_tebd_to_repinit_out": False,
        "seed": 1,
    }
    section.update(overrides)
    return section


def fitting_section() -> dict:
    """The energy fitting net of the shipped examples, float64."""
    return {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float64", "seed": 1}


def paper_era_repformer(num_layers: int) -> dict:
    """The pre-PR-#4089 repformer (spec 2.2): every update term on, res_avg, 1/N normalisation."""
    return repformer_section(
        nsel=40,
        nlayers=num_layers,
        update_g1_has_attn=True,
        update_g2_has_g1g1=True,
        update_g2_has_attn=True,
        update_style="res_avg",
        use_sqrt_nnei=False,
        g1_out_conv=False,
        g1_out_mlp=False,
    )


@dataclass(frozen=True, kw_only=True)
class ReferenceCase:
    """One deepmd-kit model to train.

    Attributes:
        name: directory name of the case; also the key tests use.
        type_map: element symbols of the model, in deepmd-kit's type order.
        descriptor: deepmd-kit descriptor section.
        heads: head name -> names of the prepared data systems it trains on. A single head named
            ``Default`` makes a single-task model; more make a multi-task model with a shared
            descriptor (deepmd-kit's ``shared_dict``).
    """

    name: str
    type_map: tuple[str, ...]
    descriptor: dict
    heads: dict[str, tuple[str, ...]]

    @property
    def is_multi_task(self) -> bool:
        """Whether the checkpoint has several named heads."""
        return list(self.heads) != ["Default"]


WATER = ("water_0",)
MOLECULES = ("nopbc_C1H4O2", "nopbc_C3H3O4")
MPTRJ = tuple(f"mptrj_{index}" for index in MPTRJ_FRAME_INDICES)


def reference_cases(mptrj_type_map: tuple[str, ...]) -> dict[str, ReferenceCase]:
    """Every case the parity tests know, by name."""
    small = descriptor_section(repinit_section(), repformer_section())
    cases = [
        ReferenceCase(
            name="small", type_map=("O", "H"), descriptor=small, heads={"Default": WATER}
        ),
        ReferenceCase(
            name="medium",
            type_map=("H", "C", "O"),
            descriptor=descriptor_section(
                repinit_section(), repformer_section(nlayers=6, update_g2_has_attn=True)
            ),
            heads={"Default": WATER + MOLECULES},
        ),
        ReferenceCase(
            name="paper",
            type_map=("O", "H"),
            descriptor=descriptor_section(
                repinit_section(rcut=9.0, rcut_smth=8.0, use_three_body=False),
                paper_era_repformer(num_layers=2),
            ),
            heads={"Default": WATER},
        ),
        ReferenceCase(
            name="paper12",
            type_map=("O", "H"),
            descriptor=descriptor_section(
                repinit_section(rcut=9.0, rcut_smth=8.0, use_three_body=False),
                paper_era_repformer(num_layers=12),
            ),
            heads={"Default": WATER},
        ),
        ReferenceCase(
            # Options the shipped configs leave at their defaults.
            name="options",
            type_map=("H", "C", "O"),
            descriptor=descriptor_section(
                repinit_section(tebd_input_mode="strip", three_body_neuron=[4, 8]),
                repformer_section(
                    nlayers=2,
                    update_h2=True,
                    update_g2_has_attn=True,
                    update_g1_has_attn=True,
                    update_style="res_incr",
                    g1_out_conv=False,
                ),
                add_tebd_to_repinit_out=True,
                concat_output_tebd=False,
            ),
            heads={"Default": WATER + MOLECULES},
        ),
        ReferenceCase(
            name="mptrj",
            type_map=mptrj_type_map,
            descriptor=small,
            heads={"Default": MPTRJ},
        ),
        ReferenceCase(
            name="multitask",
            type_map=("H", "C", "O"),
            descriptor=small,
            heads={"water": WATER, "molecules": MOLECULES},
        ),
    ]
    return {case.name: case for case in cases}


def training_input(case: ReferenceCase, systems: dict[str, Path]) -> dict:
    """The deepmd-kit input file of a case: two steps, statistics from one batch per system."""
    training = {
        "numb_steps": 2,
        "gradient_max_norm": 5.0,
        "seed": 10,
        "disp_file": "lcurve.out",
        "disp_freq": 2,
        "save_freq": 2,
    }
    learning_rate = {"type": "exp", "decay_steps": 1, "start_lr": 1e-3, "stop_lr": 1e-4}
    loss = {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1}
    loss.update({"start_pref_f": 1000, "limit_pref_f": 1})

    def data_section(names: tuple[str, ...]) -> dict:
        paths = [str(systems[name]) for name in names]
        # No validation data: deepmd-kit would evaluate it at every display step.
        return {"training_data": {"systems": paths, "batch_size": 1}}

    if not case.is_multi_task:
        model = {
            "type_map": list(case.type_map),
            "descriptor": copy.deepcopy(case.descriptor),
            "fitting_net": fitting_section(),
            "data_stat_nbatch": 1,
        }
        training.update(data_section(case.heads["Default"]))
        return {"model": model, "learning_rate": learning_rate, "loss": loss, "training": training}
    model = {
        "shared_dict": {
            "shared_type_map": list(case.type_map),
            "shared_descriptor": copy.deepcopy(case.descriptor),
        },
        "model_dict": {
            head: {
                "type_map": "shared_type_map",
                "descriptor": "shared_descriptor",
                "fitting_net": fitting_section(),
                "data_stat_nbatch": 1,
            }
            for head in case.heads
        },
    }
    training["model_prob"] = dict.fromkeys(case.heads, 1.0)
    training["data_dict"] = {head: data_section(names) for head, names in case.heads.items()}
    return {
        "model": model,
        "learning_rate": learning_rate,
        "loss_dict": {head: dict(loss) for head in case.heads},
        "training": training,
    }
