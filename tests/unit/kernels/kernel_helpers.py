"""Random inputs for the kernel tests: edges with empty slots, repeated neighbours, statistics."""

from __future__ import annotations

import os

import torch

#: The compiled kernels on CUDA are under test (benches/gpu/run.sh), not the CPU interpreter.
COMPILED = os.environ.get("LAMFORGE_KERNELS_COMPILED") == "1"


def random_edges(
    num_atoms: int, num_slots: int, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge vectors spanning both sides of the switch, a mask with empty slots and an empty row.

    Returns:
        vectors [num_atoms, N, 3], mask [num_atoms, N] bool, index [num_atoms, N] int64 (rows of
        a node table of num_atoms + 2 rows, with repeats so that scatters collide).
    """
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(num_atoms, num_slots, 3, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    lengths = 0.8 + 3.0 * torch.rand(num_atoms, num_slots, 1, generator=generator)
    vectors = (directions * lengths).to(dtype)
    mask = torch.rand(num_atoms, num_slots, generator=generator) > 0.25
    mask[0] = False  # an atom without neighbours
    index = torch.randint(0, num_atoms + 2, (num_atoms, num_slots), generator=generator)
    index[:, 1] = index[:, 0]  # the same neighbour twice (periodic images)
    return vectors.to(device), mask.to(device), index.to(device)


def random_tensor(*shape: int, dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).to(device)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-5}
    )
