"""FLOP and byte floors of the DPA-2 hot operations, per atom, from a preset's configuration.

    python benches/gpu/floors.py --preset dpa2_medium --dtype float64

Floors count the arithmetic each operation cannot avoid (2 FLOP per multiply-add) and the bytes it
must move between GPU memory and the chip at least once: its inputs read once and its outputs
written once (gathers of per-atom rows count as reads of the gathered rows; the per-atom tables
usually stay in L2, so the true floor lies between the two counts given). Forward only; a first
backward moves about twice the bytes and does about twice the FLOP of its forward.
"""

from __future__ import annotations

import argparse

from lamforge.nn import PRESETS


def floors(preset: str, word: int) -> list[tuple[str, float, float, str]]:
    """(operation, FLOP per atom, bytes per atom, what the bytes are) of one forward pass."""
    config = PRESETS[preset]()
    repinit, repformer = config.descriptor.repinit, config.descriptor.repformer
    rows = []
    for name, slots in (
        ("repinit", repinit.max_neighbors),
        ("three-body", repinit.three_body_max_neighbors),
        ("repformer", repformer.max_neighbors),
    ):
        rows.append(
            (f"env matrix + switch + norm ({name}, N={slots})", 30.0 * slots,
             slots * (3 * word + 1 + 5 * word), "read r_ij, mask; write R, sw")
        )  # fmt: skip
    tebd = repinit.type_embedding_dim
    sizes = [1 + 2 * tebd, *repinit.neurons]
    flop = sum(2 * a * b for a, b in zip(sizes, sizes[1:], strict=False))
    n = repinit.max_neighbors
    rows.append(
        ("repinit embedding net (concat)", flop * n, n * (sizes[0] + sizes[-1]) * word,
         "read s, T_j, T_i; write G")
    )  # fmt: skip
    rows.append(
        ("repinit moment R^T G + D = M^T M<", 2 * n * 4 * sizes[-1]
         + 2 * sizes[-1] * 4 * repinit.axis_neurons,
         (n * (4 + sizes[-1]) + sizes[-1] * repinit.axis_neurons) * word, "read R, G; write D")
    )  # fmt: skip
    pairs = repinit.three_body_max_neighbors**2
    sizes3 = [1 + 2 * tebd, *repinit.three_body_neurons]
    flop3 = sum(2 * a * b for a, b in zip(sizes3, sizes3[1:], strict=False))
    rows.append(
        (f"three-body net over {pairs} pairs", pairs * (flop3 + 2 * 3 + 2 * sizes3[-1]),
         (repinit.three_body_max_neighbors * 4 + sizes3[-1]) * word,
         "read R (pairs built on chip); write D3")
    )  # fmt: skip
    n, g1, g2 = repformer.max_neighbors, repformer.g1_dim, repformer.g2_dim
    layers = repformer.num_layers
    rows.append(
        (f"repformer conv: proj g2 -> g1 + gather/aggregate (x{layers})",
         layers * (2 * n * g2 * g1 + 2 * n * g1), layers * (n * g2 + n * g1 + g1 + n) * word,
         "read g2, g1[j], sw; write c_i (gather row count)")
    )  # fmt: skip
    rows.append(
        (f"repformer grrg + drrd moments (x{layers})",
         layers * (2 * n * 3 * (g2 + g1)), layers * (n * (3 + g2 + g1 + 1) + 3 * (g2 + g1)) * word,
         "read h2, g2, g1[j], sw; write A")
    )  # fmt: skip
    axis = repformer.axis_neurons
    linear1_in = g2 * axis + g1 * axis + g1
    rows.append(
        (f"repformer dense layers on g1 (x{layers})",
         layers * (2 * linear1_in * g1 + 2 * g1 * g1), layers * (linear1_in + 3 * g1) * word,
         "linear1, self MLP")
    )  # fmt: skip
    rows.append(
        (f"repformer linear2 on g2 (x{layers - 1})", (layers - 1) * 2 * n * g2 * g2,
         (layers - 1) * 2 * n * g2 * word, "read/write g2")
    )  # fmt: skip
    if repformer.update_g2_has_attn:
        heads, hidden = repformer.attn2_heads, repformer.attn2_hidden
        map_flop = 2 * n * g2 * 2 * hidden * heads + heads * n * n * (2 * hidden + 6 + 15)
        rows.append(
            (f"pair attention map q k^T, gate, softmax (x{layers - 1})", (layers - 1) * map_flop,
             (layers - 1) * (n * (g2 + 3 + 2) + heads * n * n) * word,
             "read g2, h2, sw, mask; write W [H, N, N]")
        )  # fmt: skip
        apply_flop = 2 * n * g2 * g2 * heads + heads * 2 * n * n * g2 + 2 * n * g2 * heads * g2
        rows.append(
            (f"pair attention apply to g2 + head map (x{layers - 1})",
             (layers - 1) * apply_flop, (layers - 1) * (heads * n * n + 2 * n * g2) * word,
             "read W, g2; write g2 update")
        )  # fmt: skip
    width = config.descriptor.repformer.g1_dim + tebd
    head = next(iter(config.heads.values()))
    sizes_f = [width, *head.neurons, 1]
    rows.append(
        ("fitting net", sum(2 * a * b for a, b in zip(sizes_f, sizes_f[1:], strict=False)),
         (width + 1) * word, "read descriptor; write E_i")
    )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dpa2_medium")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()
    word = 8 if args.dtype == "float64" else 4
    rows = floors(args.preset, word)
    print(f"| {args.preset} ({args.dtype}) | kFLOP/atom | kB/atom | bytes counted |")
    print("|---|---:|---:|---|")
    for name, flop, size, what in rows:
        print(f"| {name} | {flop / 1e3:,.0f} | {size / 1e3:,.1f} | {what} |")
    total_flop = sum(row[1] for row in rows)
    total_bytes = sum(row[2] for row in rows)
    print(f"| **total forward** | {total_flop / 1e3:,.0f} | {total_bytes / 1e3:,.1f} | |")


if __name__ == "__main__":
    main()
