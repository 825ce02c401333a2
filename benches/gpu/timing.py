"""Time lamforge (eager, fused, fused + torch.compile) and deepmd-kit on the same DPA-2 weights.

    python benches/gpu/timing.py --device cuda --presets dpa2_small dpa2_medium \
        --systems water192 water1536 water12288 mptrj32 --dtypes float32 float64
    python benches/gpu/timing.py --device cpu --presets dpa2_small --systems water192 --profile

Each case is one (preset, system, dtype, implementation): inference = energy, forces and virial;
training step = energy + force loss (the forces' second backward), backward, Adam step. Prints
µs per atom (median of --repeat timed calls after --warmup) and the peak CUDA memory, one table
last. deepmd-kit gets the same weights: its model is built from the preset's deepmd-kit input
section and loaded into lamforge with ``lamforge.interop.deepmd.load_checkpoint``. deepmd-kit
builds its neighbour list on the device inside the timed call; lamforge's lists come from the
Rust search beforehand (they are inputs of the model) and are not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import read

import lamforge.kernels as kernels
from lamforge.nn import DPA2Model, evaluate
from lamforge.nn.atoms import model_input_from_atoms

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMPLEMENTATIONS = ("eager", "fused", "compile", "deepmd")


@dataclass
class Result:
    preset: str
    system: str
    num_atoms: int
    dtype: str
    implementation: str
    task: str
    us_per_atom: float | None
    peak_memory_mb: float | None
    error: str | None = None
    energy_gap: float | None = None  # deepmd-kit rows: max |E_deepmd - E_lamforge| (eV)


def water(repeats: int, data: Path) -> list[Atoms]:
    """Frame 0 of the DeePMD water set (192 atoms), repeated ``repeats`` times along each axis."""
    system = data / "deepmd" / "water" / "data_0"
    coordinates = np.load(system / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(system / "set.000" / "box.npy")[0].reshape(3, 3)
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int)
    atoms = Atoms([type_map[t] for t in types], positions=coordinates, cell=box, pbc=True)
    return [atoms.repeat((repeats, repeats, repeats))]


def mptrj(num_frames: int, data: Path) -> list[Atoms]:
    """The first ``num_frames`` frames of the MPtrj random sample."""
    return read(data / "mptrj" / "mptrj-random-1k.xyz", index=f":{num_frames}")


def systems(names: list[str], data: Path) -> dict[str, list[Atoms]]:
    makers = {
        "water192": lambda: water(1, data),
        "water1536": lambda: water(2, data),
        "water12288": lambda: water(4, data),
        "mptrj32": lambda: mptrj(32, data),
        "mptrj4": lambda: mptrj(4, data),  # for dry runs on a CPU
    }
    unknown = sorted(set(names) - set(makers))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {sorted(makers)}")
    return {name: makers[name]() for name in names}


def deepmd_params(preset: str, elements: list[str], precision: str) -> dict:
    """The deepmd-kit model section of lamforge's ``dpa2_small``/``dpa2_medium`` presets."""
    layers, attention = {"dpa2_small": (3, False), "dpa2_medium": (6, True)}[preset]
    repinit = {
        "tebd_dim": 8, "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120, "neuron": [25, 50, 100],
        "axis_neuron": 12, "activation_function": "tanh", "three_body_sel": 48,
        "three_body_rcut": 4.0, "three_body_rcut_smth": 3.5, "use_three_body": True,
    }  # fmt: skip
    repformer = {
        "rcut": 4.0, "rcut_smth": 3.5, "nsel": 48, "nlayers": layers, "g1_dim": 128,
        "g2_dim": 32, "attn2_hidden": 32, "attn2_nhead": 4, "attn1_hidden": 128,
        "attn1_nhead": 4, "axis_neuron": 4, "update_h2": False, "update_g1_has_conv": True,
        "update_g1_has_grrg": True, "update_g1_has_drrd": True, "update_g1_has_attn": False,
        "update_g2_has_g1g1": False, "update_g2_has_attn": attention,
        "update_style": "res_residual", "update_residual": 0.01,
        "update_residual_init": "norm", "attn2_has_gate": True, "use_sqrt_nnei": True,
        "g1_out_conv": True, "g1_out_mlp": True,
    }  # fmt: skip
    return {
        "type_map": elements,
        "descriptor": {
            "type": "dpa2", "repinit": repinit, "repformer": repformer, "precision": precision,
            "add_tebd_to_repinit_out": False, "seed": 1,
        },
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "precision": precision,
                        "seed": 1},
    }  # fmt: skip


def build_models(preset: str, elements: list[str], dtype: str, device: str):
    """(lamforge model, deepmd-kit model or None, note) with the same weights."""
    from lamforge.nn import PRESETS

    try:
        from deepmd.pt.model.model import get_model
        from deepmd.pt.train.wrapper import ModelWrapper

        from lamforge.interop.deepmd import load_checkpoint
    except ImportError as error:
        model = DPA2Model(PRESETS[preset](tuple(elements), precision=dtype))
        return model.to(device), None, f"deepmd-kit unavailable: {error}"
    params = deepmd_params(preset, elements, dtype)
    reference = get_model(params)
    wrapper = ModelWrapper(reference, model_params=params)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ckpt.pt"
        torch.save({"model": wrapper.state_dict()}, path)
        model = load_checkpoint(path)
    return model.to(device), reference.to(device), None


def timed(function, warmup: int, repeat: int, device: str) -> tuple[float, float | None]:
    """Median seconds per call and peak CUDA memory (MB) of ``function``."""
    for _ in range(warmup):
        function()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return statistics.median(seconds), peak


def lamforge_steps(model: DPA2Model, inputs, implementation: str):
    """(inference, training step) callables of one lamforge implementation."""
    if implementation == "compile":
        model.atomic_energies_from_geometry = torch.compile(model.atomic_energies_from_geometry)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # full step, same weights

    def inference():
        return evaluate(model, inputs)

    def training():
        optimizer.zero_grad(set_to_none=True)
        output = evaluate(model, inputs, create_graph=True, virial=False)
        loss = output.energy.square().mean() + output.forces.square().mean()
        loss.backward()
        optimizer.step()

    return inference, training


def deepmd_steps(model, frames: list[Atoms], elements: list[str], dtype, device: str):
    """deepmd-kit's inference and training step on the same frames.

    deepmd-kit batches need frames of one size, so frames are grouped by size (an MPtrj batch
    runs one call per size) and the step sums over the groups.
    """
    groups: dict[int, list[Atoms]] = {}
    for atoms in frames:
        groups.setdefault(len(atoms), []).append(atoms)
    batches = []
    for group in groups.values():
        coordinates = np.stack([atoms.positions for atoms in group])
        boxes = np.stack([atoms.cell.array.reshape(9) for atoms in group])
        types = np.stack([[elements.index(s) for s in a.get_chemical_symbols()] for a in group])
        batches.append(
            (
                torch.tensor(coordinates, dtype=dtype, device=device),
                torch.tensor(types, device=device),
                torch.tensor(boxes, dtype=dtype, device=device),
            )
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # full step, same weights

    def inference():
        outputs = [model(coordinates, types, box=boxes) for coordinates, types, boxes in batches]
        return {"energy": torch.cat([output["energy"].reshape(-1) for output in outputs])}

    def training():
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for coordinates, types, boxes in batches:
            output = model(coordinates, types, box=boxes)
            loss = loss + output["energy"].square().sum() + output["force"].square().sum()
        loss.backward()
        optimizer.step()

    return inference, training


def same_weights_gap(model: DPA2Model, inputs, deepmd_inference) -> float:
    """Largest frame-energy difference between deepmd-kit and lamforge's reference path."""
    with kernels.use_fused(False):
        ours = evaluate(model, inputs, forces=False, virial=False).energy.detach()
    theirs = deepmd_inference()["energy"].detach().reshape(-1).to(ours.dtype)
    # deepmd-kit's groups are ordered by frame size; compare the sorted energies of equal sizes.
    sizes = torch.bincount(inputs.frame_index, minlength=inputs.num_frames).cpu()
    order = sorted(
        range(len(sizes)),
        key=lambda frame: list(dict.fromkeys(sizes.tolist())).index(int(sizes[frame])),
    )
    return float((theirs - ours[order]).abs().max())


def run_case(args, preset, system, frames, dtype_name) -> list[Result]:
    dtype = getattr(torch, dtype_name)
    elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    if system.startswith("water"):
        elements = ["O", "H"]
    model, reference, note = build_models(preset, elements, dtype_name, args.device)
    num_atoms = sum(len(atoms) for atoms in frames)
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    inputs = model_input_from_atoms(frames, model.elements, specs, dtype).to(args.device)
    results = []
    for implementation in args.implementations:
        for task in ("inference", "training"):
            row = Result(preset, system, num_atoms, dtype_name, implementation, task, None, None)
            try:
                if implementation == "deepmd":
                    if reference is None:
                        raise RuntimeError(note)
                    steps = deepmd_steps(reference, frames, elements, dtype, args.device)
                else:
                    steps = lamforge_steps(model, inputs, implementation)
                with kernels.use_fused(implementation in ("fused", "compile")):
                    function = steps[0] if task == "inference" else steps[1]
                    seconds, peak = timed(function, args.warmup, args.repeat, args.device)
                row.us_per_atom = seconds / num_atoms * 1e6
                row.peak_memory_mb = peak
                if implementation == "deepmd" and task == "inference":
                    row.energy_gap = same_weights_gap(model, inputs, steps[0])
            except Exception as error:  # a failing case is reported in the table, not fatal
                row.error = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                if args.verbose:
                    traceback.print_exc()
            finally:
                if implementation == "compile":
                    model.__dict__.pop("atomic_energies_from_geometry", None)
                    torch._dynamo.reset()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            results.append(row)
            print(json.dumps(asdict(row)), flush=True)
    return results


def label_blocks(model: DPA2Model) -> list[str]:
    """Wrap the model's blocks in profiler ranges (forward only) so tables name model parts."""
    from torch.autograd.profiler import record_function

    descriptor = model.descriptor
    targets = [("repinit (incl. env matrix)", descriptor.repinit), ("fitting net", model.head())]
    if descriptor.three_body is not None:
        targets.append(("three-body (incl. env matrix)", descriptor.three_body))
    for layer in descriptor.repformers.layers:
        targets.append(("repformer layer", layer))
        if layer.attn2g_map is not None:
            targets.append(("  pair attention map", layer.attn2g_map))
        if layer.attn2_mh_apply is not None:
            targets.append(("  pair attention apply", layer.attn2_mh_apply))
    for block in descriptor.statistics_blocks().values():
        targets.append(("  env matrix (normalised)", None, block))

    def wrap(label, function):
        def wrapped(*args, **kwargs):
            with record_function(label):
                return function(*args, **kwargs)

        return wrapped

    for target in targets:
        if len(target) == 3:
            label, _, block = target
            block.normalised_environment = wrap(label, block.normalised_environment)
        else:
            label, module = target
            module.forward = wrap(label, module.forward)
    return sorted({target[0] for target in targets})


def profile(args, frames, preset, dtype_name) -> None:
    """torch.profiler tables of the eager inference and training step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    dtype = getattr(torch, dtype_name)
    model, _, _ = build_models(preset, ["O", "H"], dtype_name, args.device)
    labels = label_blocks(model)
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    inputs = model_input_from_atoms(frames, model.elements, specs, dtype).to(args.device)
    activities = [ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    with kernels.use_fused(args.profile_fused):
        for task, function in zip(
            ("inference", "training"), lamforge_steps(model, inputs, "eager"), strict=True
        ):
            function()
            with torch_profile(activities=activities, record_shapes=False) as prof:
                function()
            print(f"== {preset} {task} {dtype_name} {len(frames[0])} atoms ==")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))
            total = sum(event.self_cpu_time_total for event in prof.key_averages())
            print("model part (forward ranges)            CPU total ms   share")
            for event in sorted(prof.key_averages(), key=lambda e: -e.cpu_time_total):
                if event.key in labels:
                    print(
                        f"{event.key:38} {event.cpu_time_total / 1e3:12.1f} "
                        f"{event.cpu_time_total / total:7.1%}  ({event.count} calls)"
                    )


def table(results: list[Result]) -> str:
    lines = [
        f"{'preset':12} {'system':11} {'atoms':>6} {'dtype':8} {'impl':8} {'task':9} "
        f"{'us/atom':>9} {'peak MB':>8}  vs eager  vs deepmd"
    ]
    index = {(r.preset, r.system, r.dtype, r.task, r.implementation): r for r in results}
    for r in results:
        if r.us_per_atom is None:
            lines.append(
                f"{r.preset:12} {r.system:11} {r.num_atoms:>6} {r.dtype:8} "
                f"{r.implementation:8} {r.task:9} {'-':>9} {'-':>8}  {r.error}"
            )
            continue
        ratios = []
        for other in ("eager", "deepmd"):
            base = index.get((r.preset, r.system, r.dtype, r.task, other))
            ok = base is not None and base.us_per_atom is not None
            ratios.append(f"{base.us_per_atom / r.us_per_atom:8.2f}x" if ok else f"{'-':>9}")
        if r.energy_gap is not None:
            ratios.append(f" |dE| {r.energy_gap:.1e} eV")
        peak = f"{r.peak_memory_mb:8.0f}" if r.peak_memory_mb is not None else f"{'-':>8}"
        lines.append(
            f"{r.preset:12} {r.system:11} {r.num_atoms:>6} {r.dtype:8} {r.implementation:8} "
            f"{r.task:9} {r.us_per_atom:9.2f} {peak}  {' '.join(ratios)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["dpa2_small", "dpa2_medium"])
    parser.add_argument(
        "--systems", nargs="+", default=["water192", "water1536", "water12288", "mptrj32"]
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="print profiler tables instead")
    parser.add_argument("--profile-fused", action="store_true")
    parser.add_argument("--profile-rows", type=int, default=20)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--table-from", nargs="+", type=Path, help="only print one table from --json files"
    )
    args = parser.parse_args()
    if args.table_from:
        rows = [Result(**row) for path in args.table_from if path.is_file()
                for row in json.loads(path.read_text())]  # fmt: skip
        print(table(rows))
        return
    unknown = sorted(set(args.implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise SystemExit(f"unknown implementations {unknown}; choose from {IMPLEMENTATIONS}")
    frames_by_system = systems(args.systems, args.data)
    if args.profile:
        for preset in args.presets:
            for dtype_name in args.dtypes:
                profile(args, frames_by_system[args.systems[0]], preset, dtype_name)
        return
    results = []
    for preset in args.presets:
        for system, frames in frames_by_system.items():
            for dtype_name in args.dtypes:
                results += run_case(args, preset, system, frames, dtype_name)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
