"""Curation on the frame index: filter by a polars expression, seeded splits, merges.

Queries run on the parquet index only; arrays are read only to copy the selected frames into a
new dataset (``copy_frames``), which goes through ``DatasetWriter`` and so is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from lamforge.data.format import DatasetInfo
from lamforge.data.store import Store

#: Split names, in the order of the fractions given to ``assign_splits``.
SPLITS: tuple[str, ...] = ("train", "valid", "test")


def parse_expression(text: str) -> pl.Expr:
    """Evaluates a polars expression written by the user, e.g. ``pl.col("num_atoms") < 50``.

    Only ``pl`` and ``col`` (``pl.col``) are in scope; this runs the user's own text, like a
    Python one-liner would.

    Raises:
        ValueError: if the text is not a valid expression.
    """
    try:
        expression = eval(text, {"__builtins__": {}}, {"pl": pl, "col": pl.col})  # noqa: S307
    except Exception as error:
        raise ValueError(f"invalid filter expression {text!r}: {error}") from error
    if not isinstance(expression, pl.Expr):
        raise ValueError(f"filter {text!r} is not a polars expression")
    return expression


def select_frames(index: pl.DataFrame, expression: pl.Expr) -> np.ndarray:
    """Frame ids of the index rows where ``expression`` is true.

    Raises:
        ValueError: naming the index columns when the expression cannot be evaluated.
    """
    try:
        selected = index.filter(expression)
    except Exception as error:
        raise ValueError(
            f"cannot evaluate the filter on the frame index ({error}); columns: {index.columns}"
        ) from error
    return selected["frame"].to_numpy()


def copy_frames(
    store: Store,
    parts: Sequence[tuple[str, np.ndarray]],
    info: DatasetInfo,
    *,
    overwrite: bool = False,
    progress: bool = False,
    batch_frames: int = 2048,
) -> DatasetInfo:
    """Writes the chosen frames of one or more datasets as a new dataset.

    Args:
        store: The store holding the sources and receiving ``info.name``.
        parts: ``(dataset name, frame ids)`` pairs, copied in order.
        info: Attributes of the new dataset (its ``source`` is set to the parts' names).
        overwrite: Replace ``info.name`` if it exists (only after the copy is complete).
        progress: Show a progress bar.
        batch_frames: Frames read at a time.

    Returns:
        The attributes of the written dataset.
    """
    info = replace(info, source=tuple(f"lamforge-store:{name}" for name, _ in parts))
    total = sum(len(ids) for _, ids in parts)
    with (
        store.writer(info, overwrite=overwrite) as writer,
        tqdm(total=total, desc=info.name, unit="frame", disable=not progress) as bar,
    ):
        for name, ids in parts:
            reader = store.reader(name)
            source = f"lamforge-store:{name}"
            for start in range(0, len(ids), batch_frames):
                batch = reader.read_frames(ids[start : start + batch_frames])
                for frame in batch.frames():
                    frame.source = source
                    writer.add(frame)
                bar.update(batch.num_frames)
    return store.info(info.name)


def assign_splits(
    index: pl.DataFrame,
    fractions: Sequence[float],
    *,
    seed: int,
    group_by: str | None = None,
) -> pl.DataFrame:
    """Fills the ``split`` column with a seeded train/valid/test assignment.

    Args:
        index: Frame index.
        fractions: Fractions of ``SPLITS`` (train, valid[, test]); must sum to 1.
        seed: Seed of the permutation; the same seed gives the same split.
        group_by: Index column (e.g. ``reduced_formula``) whose groups stay in one split, so that
            the same composition cannot appear in training and test.

    Returns:
        The index with ``split`` filled; with groups, fractions hold for groups, not frames.
    """
    if not 2 <= len(fractions) <= len(SPLITS) or any(f < 0 for f in fractions):
        raise ValueError(f"give 2 or 3 non-negative fractions (train valid [test]), {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {sum(fractions)}")
    if group_by is not None and group_by not in index.columns:
        raise ValueError(f"cannot group by {group_by!r}: index columns are {index.columns}")
    keys = index[group_by] if group_by else index["frame"]
    unique = keys.unique(maintain_order=True)
    order = np.random.default_rng(seed).permutation(unique.len())
    bounds = np.round(np.cumsum(fractions) * unique.len()).astype(int)
    labels = np.empty(unique.len(), dtype=object)
    start = 0
    for name, stop in zip(SPLITS, bounds, strict=False):
        labels[order[start:stop]] = name
        start = stop
    lookup = pl.DataFrame({"_key": unique, "_split": labels.tolist()}, strict=False)
    joined = index.with_columns(keys.alias("_key")).join(lookup, on="_key", how="left")
    return joined.with_columns(pl.col("_split").alias("split")).drop("_key", "_split")
