import numpy as np
import pytest
import zarr
from data_helpers import frames_of, write_dataset

from lamforge.data.frames import Frame
from lamforge.data.store import Store
from lamforge.data.validate import ValidationConfig, closest_pair, robust_z, validate_dataset


def _checks(store, name, **config):
    findings = validate_dataset(store.reader(name), ValidationConfig(**config))
    return {(f.check, f.frame, f.severity) for f in findings}, findings


def test_clean_demo_data_has_no_errors(tmp_path, demo):
    store = Store.open(tmp_path / "s.zarr", create=True)
    for name, task in demo.items():
        write_dataset(store, name, frames_of(task))
        checks, _ = _checks(store, name)
        assert not [c for c in checks if c[2] == "error"], name


def test_each_problem_is_found_with_its_frame(tmp_path, demo):
    store = Store.open(tmp_path / "s.zarr", create=True)
    frames = frames_of(demo["bulk"])
    close = frames[1]
    close.positions = close.positions.copy()
    close.positions[1] = close.positions[0] + [0.2, 0.0, 0.0]
    frames[2].energy += 100.0 * frames[2].num_atoms  # outlier: +100 eV/atom
    frames[3].forces = None  # missing label: stored as NaN, but not an error
    frames.append(frames[4])  # duplicate of frame 4, as frame 6
    write_dataset(store, "bulk", frames)
    group = zarr.open_group(store.path / "bulk", mode="r+")
    energy = group["energy"][:]
    energy[5] = np.inf  # damage written behind the writer's back
    group["energy"][:] = energy
    checks, findings = _checks(store, "bulk")
    assert ("close_atoms", 1, "error") in checks
    assert ("non_finite", 5, "error") in checks
    assert ("energy_outlier", 2, "warning") in checks
    assert ("missing_label", 3, "warning") in checks
    assert ("non_finite", 3, "error") not in checks
    assert ("duplicate", 6, "warning") in checks
    message = next(f.message for f in findings if f.check == "close_atoms")
    assert "0.200 Å apart" in message
    assert all(f.dataset == "bulk" for f in findings)


def test_closest_pair_oracle_with_periodic_images():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cell = np.diag(rng.uniform(2.0, 4.0, 3)) + rng.uniform(-0.3, 0.3, (3, 3))
        positions = rng.uniform(0, 1, (5, 3)) @ cell
        pbc = rng.random(3) < 0.5
        shifts = np.array(np.meshgrid(*[[-1, 0, 1] if p else [0] for p in pbc])).T.reshape(-1, 3)
        best = np.inf
        for i in range(5):
            for j in range(5):
                for shift in shifts:
                    if i == j and not shift.any():
                        continue
                    best = min(best, np.linalg.norm(positions[j] + shift @ cell - positions[i]))
        got = closest_pair(positions, cell, pbc, cutoff=1.9)
        assert got == pytest.approx(best) if best < 1.9 else got == np.inf


def test_robust_z():
    values = np.array([1.0, 1.1, 0.9, 1.0, 50.0, np.nan])
    scores = robust_z(values)
    assert np.argmax(np.abs(scores)) == 4 and abs(scores[0]) < 1 and scores[5] == 0
    assert not robust_z(np.ones(4)).any()


def test_nonperiodic_single_atom_has_no_pair():
    frame = Frame(
        positions=np.zeros((1, 3)),
        atomic_numbers=np.array([1]),
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
    )
    assert closest_pair(frame.positions, frame.cell, frame.pbc, 0.5) == np.inf


def test_two_dimensional_cell_with_a_zero_vector():
    cell = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]])
    positions = np.array([[0.0, 0, 0], [0.1, 2.95, 0.2]])  # 0.2 Å away through the y image
    pbc = np.array([True, True, False])
    frame = Frame(positions=positions, atomic_numbers=np.array([1, 1]), cell=cell, pbc=pbc)
    frame.check()  # a zero vector along a non-periodic direction is allowed
    expected = np.linalg.norm([0.1, -0.05, 0.2])
    assert closest_pair(positions, cell, pbc, 0.5) == pytest.approx(expected)
