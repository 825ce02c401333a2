"""The DPA-2 model in PyTorch: descriptor, energy heads, forces and virials, presets, checkpoints.

```python
from lamforge.nn import DPA2Model, dpa2_small, evaluate
model = DPA2Model(dpa2_small(("O", "H")))
output = evaluate(model, inputs)   # inputs: lamforge.nn.ModelInput
```
"""

from lamforge.nn.checkpoint import load_checkpoint, save_checkpoint
from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.nn.forces import ModelOutput, evaluate
from lamforge.nn.inputs import ModelInput, NeighborList, atom_types_from_numbers
from lamforge.nn.model import DPA2Model
from lamforge.nn.presets import PRESETS, dpa2_large, dpa2_medium, dpa2_paper, dpa2_small
from lamforge.nn.statistics import compute_statistics, environment_statistics, fit_energy_bias

__all__ = [
    "PRESETS",
    "DPA2Model",
    "DescriptorConfig",
    "FittingConfig",
    "ModelConfig",
    "ModelInput",
    "ModelOutput",
    "NeighborList",
    "RepformerConfig",
    "RepinitConfig",
    "atom_types_from_numbers",
    "compute_statistics",
    "dpa2_large",
    "dpa2_medium",
    "dpa2_paper",
    "dpa2_small",
    "environment_statistics",
    "evaluate",
    "fit_energy_bias",
    "load_checkpoint",
    "save_checkpoint",
]
