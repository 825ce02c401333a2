"""Agreement with ASE's neighbour list on the real structures in ../shared/data."""

import ase.io
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from lamforge.neighbors import neighbor_list
from lamforge.testing.neighbors import pair_table

CUTOFFS = (4.0, 6.0)


def assert_agrees_with_ase(atoms, cutoff, where):
    i, j, shifts, distances = ase_neighbor_list("ijSd", atoms, cutoff, self_interaction=False)
    ours = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff=cutoff, num_threads=1)
    expected = pair_table(i, j, shifts)
    actual = pair_table(ours.centers, ours.neighbors, ours.shifts)
    assert actual.shape == expected.shape, f"{where}: {len(actual)} pairs, ASE {len(expected)}"
    np.testing.assert_array_equal(actual, expected, err_msg=where)
    order_ours = np.lexsort(np.column_stack((ours.centers, ours.neighbors, ours.shifts)).T[::-1])
    order_ase = np.lexsort(np.column_stack((i, j, shifts)).T[::-1])
    np.testing.assert_allclose(
        ours.distances[order_ours], distances[order_ase], rtol=0, atol=1e-10, err_msg=where
    )


@pytest.mark.parametrize("name", ["mptrj-random-1k.xyz", "mptrj-highest-stress-1k.xyz"])
def test_mptrj_frames(shared_data, name):
    # Every 40th frame: 25 frames per file across many elements, sizes (1 to 192 atoms) and cell
    # shapes, including the most compressed cells of the data set.
    frames = ase.io.read(shared_data / "mptrj" / name, index="::40")
    assert len(frames) >= 20
    for number, atoms in enumerate(frames):
        for cutoff in CUTOFFS:
            assert_agrees_with_ase(atoms, cutoff, f"{name} frame {40 * number} cutoff {cutoff}")


def test_oc20_slabs(shared_data):
    paths = sorted((shared_data / "oc20").glob("*.traj"))
    assert paths, "no OC20 trajectories"
    for path in paths[::3]:
        atoms = ase.io.read(path, index="-1")
        for pbc in (atoms.pbc.copy(), np.array([True, True, False])):
            atoms.pbc = pbc
            assert_agrees_with_ase(atoms, 6.0, f"{path.name} last frame pbc {pbc.tolist()}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mptrj-random-1k.xyz", "mptrj-highest-stress-1k.xyz"])
def test_every_mptrj_frame(shared_data, name):
    for number, atoms in enumerate(ase.io.read(shared_data / "mptrj" / name, index=":")):
        assert_agrees_with_ase(atoms, 6.0, f"{name} frame {number} cutoff 6.0")


@pytest.mark.slow
def test_every_oc20_frame_as_a_slab(shared_data):
    for path in sorted((shared_data / "oc20").glob("*.traj")):
        for number, atoms in enumerate(ase.io.read(path, index="::10")):
            atoms.pbc = [True, True, False]
            assert_agrees_with_ase(atoms, 6.0, f"{path.name} frame {10 * number}")
