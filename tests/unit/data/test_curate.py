import numpy as np
import polars as pl
import pytest
from data_helpers import frames_of, write_dataset

from lamforge.data.curate import assign_splits, copy_frames, parse_expression, select_frames
from lamforge.data.format import DatasetInfo
from lamforge.data.index import hill_formula
from lamforge.data.store import Store


@pytest.fixture
def store(tmp_path, demo):
    store = Store.open(tmp_path / "store.zarr", create=True)
    for name in ("bulk", "clusters"):
        write_dataset(store, name, frames_of(demo[name]))
    return store


def test_hill_formula():
    assert hill_formula({"O": 1, "H": 2}) == "H2O"
    assert hill_formula({"O": 1, "H": 6, "C": 2}) == "C2H6O"
    assert hill_formula({"Cu": 3, "Au": 1}) == "AuCu3"


def test_filter_copies_exactly_the_selected_frames(store):
    index = store.index("bulk")
    expression = parse_expression('pl.col("num_atoms") > 4')
    ids = select_frames(index, expression)
    assert list(ids) == index.filter(pl.col("num_atoms") > 4)["frame"].to_list()
    assert 0 < len(ids) < index.height
    info = copy_frames(store, [("bulk", ids)], DatasetInfo(name="big"))
    assert info.num_frames == len(ids)
    assert info.source == ("lamforge-store:bulk",)
    copied = store.reader("big").read_frames(range(len(ids)))
    original = store.reader("bulk").read_frames(ids)
    np.testing.assert_array_equal(copied.positions, original.positions)
    np.testing.assert_array_equal(copied.virial, original.virial)
    new_index = store.index("big")
    assert new_index["content_hash"].to_list() == index.filter(expression)["content_hash"].to_list()
    assert new_index["source_index"].to_list() == list(ids)


def test_bad_expressions_are_clear(store):
    with pytest.raises(ValueError, match="invalid filter expression"):
        parse_expression("pl.col(")
    with pytest.raises(ValueError, match="not a polars expression"):
        parse_expression("3")
    with pytest.raises(ValueError, match="columns:.*num_atoms"):
        select_frames(store.index("bulk"), parse_expression('pl.col("nope") > 1'))


def test_merge_concatenates_in_order(store):
    parts = [(name, np.arange(store.info(name).num_frames)) for name in ("bulk", "clusters")]
    info = copy_frames(store, parts, DatasetInfo(name="both"))
    assert info.num_frames == 12
    assert set(info.elements) == set(store.info("bulk").elements) | set(
        store.info("clusters").elements
    )
    merged = store.index("both")["content_hash"].to_list()
    assert (
        merged
        == store.index("bulk")["content_hash"].to_list()
        + store.index("clusters")["content_hash"].to_list()
    )


def _index(formulas):
    return pl.DataFrame(
        {
            "frame": np.arange(len(formulas)),
            "reduced_formula": formulas,
            "split": [None] * len(formulas),
        },
        schema_overrides={"split": pl.String},
    )


def test_split_is_seeded_and_sized():
    index = _index([f"X{i}" for i in range(1000)])
    first = assign_splits(index, [0.8, 0.1, 0.1], seed=1)
    again = assign_splits(index, [0.8, 0.1, 0.1], seed=1)
    other = assign_splits(index, [0.8, 0.1, 0.1], seed=2)
    assert first["split"].to_list() == again["split"].to_list()
    assert first["split"].to_list() != other["split"].to_list()
    counts = dict(first.group_by("split").len().iter_rows())
    assert counts == {"train": 800, "valid": 100, "test": 100}
    assert first["frame"].to_list() == list(range(1000))


def test_grouped_split_does_not_leak_compositions():
    rng = np.random.default_rng(0)
    formulas = [f"F{k}" for k in rng.integers(0, 60, size=900)]
    split = assign_splits(_index(formulas), [0.7, 0.15, 0.15], seed=0, group_by="reduced_formula")
    per_formula = split.group_by("reduced_formula").agg(pl.col("split").n_unique())
    assert per_formula["split"].max() == 1
    assert set(split["split"]) == {"train", "valid", "test"}


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(_index(["A"] * 3), [0.5, 0.1, 0.1], seed=0)
    with pytest.raises(ValueError, match="cannot group by"):
        assign_splits(_index(["A"] * 3), [0.5, 0.5], seed=0, group_by="nope")


def test_store_write_index_keeps_frames(store):
    index = assign_splits(store.index("bulk"), [0.5, 0.5], seed=0)
    store.write_index("bulk", index)
    assert store.index("bulk")["split"].null_count() == 0
    with pytest.raises(ValueError, match="does not list"):
        store.write_index("bulk", index.head(2))
