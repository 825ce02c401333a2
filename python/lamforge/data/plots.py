"""PNG figures of ``lamforge data stats``: element coverage on the periodic table, histograms.

matplotlib is imported lazily with the non-interactive Agg backend, so nothing needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from lamforge.data.stats import DatasetStats, Distribution

# (period, group) of every element in the 18-column layout; lanthanides and actinides sit on
# rows 8 and 9 (after a gap), as printed tables show them.
_MAIN_BLOCK_PERIODS = ((1, 2), (3, 10), (11, 18), (19, 36), (37, 54), (55, 86), (87, 118))


def table_position(number: int) -> tuple[int, int]:
    """Row and column (both from 0) of element ``number`` in an 18-column periodic table."""
    if 57 <= number <= 71 or 89 <= number <= 103:
        row = 8 if number <= 71 else 9
        return row, 2 + number - (57 if number <= 71 else 89)
    if number <= 2:
        return 0, 0 if number == 1 else 17
    for period, (first, last) in enumerate(_MAIN_BLOCK_PERIODS):
        if first <= number <= last:
            offset = number - first
            if last - first + 1 == 8:  # periods 2 and 3: s block, then the p block
                return period, offset if offset < 2 else offset + 10
            if number > 71 and period == 5 or number > 103 and period == 6:
                offset -= 14  # skip the f block, drawn below
            return period, offset
    raise ValueError(f"no element with atomic number {number}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_periodic_table(atoms_per_element: dict[str, int], title: str, path: Path) -> Path:
    """Colours each element by its number of atoms (log scale); grey when absent."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    figure, axes = plt.subplots(figsize=(12, 6.5))
    counts = [count for count in atoms_per_element.values() if count > 0]
    norm = LogNorm(vmin=min(counts, default=1), vmax=max(max(counts, default=1), 2))
    colormap = plt.get_cmap("viridis")
    for number in range(1, 119):
        row, column = table_position(number)
        symbol = chemical_symbols[number]
        count = atoms_per_element.get(symbol, 0)
        color = colormap(norm(count)) if count else (0.9, 0.9, 0.9)
        axes.add_patch(plt.Rectangle((column, -row), 0.95, 0.95, color=color))
        text_color = "white" if count and norm(count) < 0.6 else "black"
        axes.text(
            column + 0.47,
            -row + 0.47,
            symbol,
            ha="center",
            va="center",
            fontsize=8,
            color=text_color,
        )
    axes.set_xlim(-0.2, 18.2)
    axes.set_ylim(-9.2, 1.2)
    axes.set_aspect("equal")
    axes.axis("off")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    figure.colorbar(mappable, ax=axes, shrink=0.6, label="atoms")
    axes.set_title(title)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_histogram(
    distribution: Distribution, xlabel: str, title: str, path: Path, *, log_x: bool = False
) -> Path:
    """Bar plot of a ``Distribution``'s histogram."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    if distribution.count:
        edges = np.array(distribution.bin_edges)
        if log_x and edges[1] > 0:
            # The first bin starts at zero (e.g. |F| = 0 on symmetric sites); draw it from a
            # decade below the next edge so that the axis can be logarithmic.
            edges[0] = edges[0] if edges[0] > 0 else edges[1] / 10
            axes.set_xscale("log")
        axes.stairs(distribution.counts, edges, fill=True)
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    axes.set_title(f"{title} (n = {distribution.count})")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_dataset(stats: DatasetStats, directory: Path) -> list[Path]:
    """Writes the four figures of one dataset into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = stats.name
    atoms = {symbol: counts["atoms"] for symbol, counts in stats.elements.items()}
    return [
        plot_periodic_table(
            atoms, f"{name}: atoms per element", directory / f"{name}_elements.png"
        ),
        plot_histogram(
            stats.energy_per_atom,
            "energy per atom (eV)",
            f"{name}: energy per atom",
            directory / f"{name}_energy_per_atom.png",
        ),
        plot_histogram(
            stats.force_magnitude,
            "|F| (eV/Å)",
            f"{name}: force magnitude",
            directory / f"{name}_force_magnitude.png",
            log_x=True,
        ),
        plot_histogram(
            stats.atoms_per_frame,
            "atoms per frame",
            f"{name}: frame size",
            directory / f"{name}_atoms_per_frame.png",
        ),
    ]
