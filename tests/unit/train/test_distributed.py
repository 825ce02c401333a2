"""Two gloo processes under DistributedDataParallel train exactly like one process."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ase.build import bulk
from test_trainer import SPECS, tiny_config, trainer_config

from lamforge.data.demo import PRETRAIN_METALS, label
from lamforge.nn.model import DPA2Model
from lamforge.testing.reference_neighbors import model_input
from lamforge.train.frames import batches_from_atoms
from lamforge.train.stream import InMemoryStream
from lamforge.train.trainer import Trainer

STEPS = 3


def _frames():
    frames = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.1, seed=seed)
        frames.append(label(atoms, {"Cu": -1.0}))
    return frames


def _train(rank: int, world_size: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
    frames = _frames()
    # Each rank streams its own half of the global batch of two frames.
    mine = frames[rank::world_size]
    batches = batches_from_atoms(
        mine, "bulk", PRETRAIN_METALS, SPECS, model_input, frames_per_batch=len(mine)
    )
    model = DPA2Model(tiny_config())
    trainer = Trainer(
        model, trainer_config(STEPS), InMemoryStream({"bulk": batches}, seed=0),
        os.path.join(output, f"rank{rank}"), progress=False,
    )  # fmt: skip
    trainer.run()
    if rank == 0:
        torch.save(model.state_dict(), os.path.join(output, f"weights-{world_size}.pt"))
    if world_size > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_process_ddp_equals_single_process(tmp_path):
    assert len({len(f) for f in _frames()}) == 1  # equal sizes: the mean losses then agree
    _train(0, 1, 0, str(tmp_path))
    mp.spawn(_train, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "weights-1.pt", weights_only=True)
    double = torch.load(tmp_path / "weights-2.pt", weights_only=True)
    initial = DPA2Model(tiny_config()).state_dict()
    moved = [name for name in single if not torch.equal(single[name], initial[name])]
    assert moved, "training changed no weight"
    for name in single:
        np.testing.assert_allclose(
            double[name].numpy(), single[name].numpy(), rtol=1e-9, atol=1e-12, err_msg=name
        )


def _chunked_gradients(rank: int, world_size: int, port: int, output: str) -> None:
    """Each rank back-propagates its own two frames of different sizes, chunked and whole."""
    from test_step import ELEMENTS, LOSSES, make_batch, mixed_frames

    from lamforge.testing.tiny_models import tiny_dpa2_config
    from lamforge.train.loss import EnergyLoss
    from lamforge.train.step import EnergyForceModule, backward_in_chunks

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    frames = mixed_frames()
    batch = make_batch([frames[rank], frames[rank + 2]])
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    module = torch.nn.parallel.DistributedDataParallel(
        EnergyForceModule(model), find_unused_parameters=True
    )
    results = {}
    # Whole first, then chunked, then whole again: a no_sync leftover would show as a difference.
    for name, chunk in (("whole", None), ("chunked", 1), ("again", None)):
        model.zero_grad(set_to_none=True)
        backward_in_chunks(
            module, batch, EnergyLoss(LOSSES["mse"]), 1.0, virial=True, max_atoms_per_chunk=chunk
        )
        results[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.save(results, os.path.join(output, f"grads-{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_ddp_chunked_backward_equals_whole_batch(tmp_path):
    mp.spawn(_chunked_gradients, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"grads-{r}.pt", weights_only=True) for r in range(2)]
    for name, whole in ranks[0]["whole"].items():
        for rank in ranks:  # all-reduced: every rank holds the same averaged gradient
            for kind in ("chunked", "again"):
                np.testing.assert_allclose(
                    rank[kind][name].numpy(), whole.numpy(), rtol=1e-11, atol=1e-12,
                    err_msg=f"{kind} {name}",
                )  # fmt: skip
