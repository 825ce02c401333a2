"""Thread pools: explicit sizes and safety in processes forked after the search ran."""

import os
import time

import numpy as np

from lamforge.neighbors import neighbor_list


def test_search_works_in_a_forked_child():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 10, size=(300, 3))
    cell = np.eye(3) * 10
    # Build the parent's pools first, as a DataLoader's main process would.
    expected = neighbor_list(positions, cell, cutoff=4.0, num_threads=2)
    pid = os.fork()
    if pid == 0:  # child: must neither deadlock nor differ
        try:
            result = neighbor_list(positions, cell, cutoff=4.0, num_threads=2)
            same = np.array_equal(result.neighbors, expected.neighbors)
            os._exit(0 if same else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("neighbour search deadlocked in a forked child")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
