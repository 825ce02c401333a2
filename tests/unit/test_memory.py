"""lamforge.memory: freed memory is reused (no fresh pages) once the training policy is on."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from lamforge import memory
from lamforge.train import trainer as trainer_module

glibc_only = pytest.mark.skipif(
    memory._libc() is None, reason="the C library is not glibc (mallopt policy does not apply)"
)

# Allocates, touches and frees a 32 MB tensor 24 times; prints the page faults of the last 12.
_CHURN = textwrap.dedent(
    """
    import resource, sys
    import torch
    from lamforge.memory import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    faults = []
    for _ in range(24):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty(4 << 20, dtype=torch.float64)
        block.fill_(1.0)
        del block
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[12:]))
    """
)
_PAGES_PER_BLOCK = (32 << 20) // 4096


def _late_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


@glibc_only
def test_freed_blocks_are_reused_without_page_faults():
    # glibc's defaults fault a fresh copy in for every block of this size (the control) ...
    assert _late_faults("default") > 6 * _PAGES_PER_BLOCK
    # ... with the policy the same churn reuses the freed block.
    assert _late_faults("keep") < _PAGES_PER_BLOCK // 10


@glibc_only
def test_release_returns_a_bool():
    assert isinstance(memory.release_freed_memory(), bool)


@pytest.mark.parametrize("kwargs", [{"mmap_bytes": 0}, {"trim_bytes": 2**31}])
def test_sizes_are_checked(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        memory.keep_freed_memory(**kwargs)


@pytest.mark.parametrize("keep", [True, False])
def test_trainer_applies_the_policy_when_configured(keep, tmp_path, monkeypatch):

    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    from lamforge.data.demo import PRETRAIN_METALS, DemoConfig, demo_tasks
    from lamforge.nn.model import DPA2Model
    from lamforge.testing.reference_neighbors import model_input
    from lamforge.testing.tiny_models import TINY_SPECS, tiny_dpa2_config
    from lamforge.train.frames import batches_from_atoms
    from lamforge.train.stream import InMemoryStream

    task = next(t for t in demo_tasks(DemoConfig(frames_per_task=2, seed=1)) if not t.downstream)
    batches = batches_from_atoms(
        task.frames, task.name, PRETRAIN_METALS, TINY_SPECS, model_input, frames_per_batch=2
    )
    model = DPA2Model(tiny_dpa2_config(PRETRAIN_METALS, (task.name,)))
    config = dataclasses.replace(
        trainer_module.TrainerConfig(steps=1, validate_every=0), keep_freed_memory=keep
    )
    stream = InMemoryStream({task.name: batches}, seed=0)
    trainer_module.Trainer(model, config, stream, tmp_path, progress=False).run()
    assert len(calls) == (1 if keep else 0)
