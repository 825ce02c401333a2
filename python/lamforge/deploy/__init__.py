"""Run a deployed model (a file written by ``lamforge export``) without lamforge's model code.

Only torch, NumPy, ASE and the Rust neighbour lists are imported: nothing from ``lamforge.nn``
or ``lamforge.train``. The file's calling convention is in :mod:`lamforge.deploy.format`.

```python
from lamforge.deploy import DeployedCalculator, DeployedModel

atoms.calc = DeployedCalculator("model.pt2")
energy, forces = atoms.get_potential_energy(), atoms.get_forces()
```
"""

from lamforge.deploy.calculator import DeployedCalculator
from lamforge.deploy.format import DeployedMetadata
from lamforge.deploy.runtime import DeployedModel, DeployedOutput, load_program

__all__ = [
    "DeployedCalculator",
    "DeployedMetadata",
    "DeployedModel",
    "DeployedOutput",
    "load_program",
]
