"""The Rust extension loads, its functions are callable and its stubs declare all of them."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import lamforge
from lamforge import _core


def test_core_version_matches_package():
    assert _core.core_version() == lamforge.__version__


def test_cell_heights_of_a_sheared_cell():
    cell = np.array([[1.0, 0.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    heights = _core.cell_heights(cell)
    np.testing.assert_allclose(heights, [1 / np.sqrt(26), 1.0, 1.0], rtol=1e-14)


def test_cell_heights_equal_volume_over_face_area():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cell = rng.normal(size=(3, 3))
        volume = abs(np.linalg.det(cell))
        expected = [
            volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
            for k in range(3)
        ]
        np.testing.assert_allclose(_core.cell_heights(cell), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (np.zeros((3, 3)), "singular"),
        (np.array([[1.0, 0, 0], [0, np.nan, 0], [0, 0, 1]]), "NaN"),
        (np.eye(2), "shape"),
    ],
)
def test_cell_heights_rejects_bad_cells(cell, message):
    with pytest.raises(ValueError, match=message):
        _core.cell_heights(cell)


def test_stub_declares_every_name():
    stub = Path(lamforge.__file__).with_name("_core.pyi")
    declared = set()
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    exported = {name for name in dir(_core) if not name.startswith("_")}
    assert exported == declared


def test_stub_functions_have_the_bindings_parameters():
    # Parameter names, order and which have defaults, against the compiled signatures.
    stub = Path(lamforge.__file__).with_name("_core.pyi")
    for node in ast.parse(stub.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        function = getattr(_core, node.name)
        if getattr(function, "__text_signature__", None) is None:
            continue
        parameters = inspect.signature(function).parameters.values()
        compiled = [(p.name, p.default is not inspect.Parameter.empty) for p in parameters]
        arguments = node.args.args
        num_defaults = len(node.args.defaults)
        declared = [
            (argument.arg, index >= len(arguments) - num_defaults)
            for index, argument in enumerate(arguments)
        ]
        assert declared == compiled, node.name
