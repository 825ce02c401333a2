"""Export one head of a lamforge model into a single deployable file.

```python
from lamforge.export import export_model
from lamforge.nn.loading import load_model

export_model(load_model("model.pt"), "model.pt2", head="water")
```

The file evaluates energies, forces and virials with torch alone (``lamforge.deploy`` reads it,
as can any ``torch.export`` / TorchScript consumer); its calling convention and metadata are in
:mod:`lamforge.deploy.format`.
"""

from lamforge.export.build import export_model
from lamforge.export.program import EnergyProgram

__all__ = ["EnergyProgram", "export_model"]
