"""Distillation acceptance benchmark on liquid water (DeePMD data in ../shared/data).

Stages (each resumable, results in WORKDIR; run them in order):

    python benches/distill.py prepare  --workdir W     # import data_0..2 (train), data_3 (test)
    python benches/distill.py teacher  --workdir W --minutes 120   # DPA-2 small, 16,000 steps
    python benches/distill.py distill  --workdir W     # lamforge distill loop (se_e2_a student)
    python benches/distill.py evaluate --workdir W --compile   # RMSE vs DFT on data_3, MD speed
    python benches/distill.py nvt --workdir W --role student --ps 10 --compile   # NVT 300 K
    python benches/distill.py nvt --workdir W --role teacher --ps 3
    python benches/distill.py report --workdir W       # stability numbers, O-O RDF (PNG), table
    python benches/distill.py speed --workdir W        # MD speed of untrained models (no training)

The teacher is trained on data_0..2 (320 frames) and validated on every fifth frame of data_3
during training; data_3 (80 frames) is the held-out set of every RMSE. ``teacher`` and
``distill`` also stop at ``--minutes`` of wall clock (a SIGALRM turned into the Trainer's Ctrl-C
path, which leaves a checkpoint). Everything runs with one torch thread and one neighbour-search
thread; speeds are CPU time (``time.process_time``) of teacher and student measured side by side
in one process, so a loaded machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from ase import units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from lamforge.calculators import LAMCalculator
from lamforge.config import save_yaml
from lamforge.data.store import Store
from lamforge.distill.config import (
    DistillConfig,
    LoopSection,
    SourceSection,
    StudentSection,
    TeacherSection,
)
from lamforge.distill.explore import ExplorationConfig
from lamforge.distill.loop import Distillation
from lamforge.distill.select import TrustLevels
from lamforge.distill.students import initialize_model
from lamforge.distill.teacher import frames_from_store, predict_frames
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.config import ModelConfig
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.nn.presets import dpa2_small
from lamforge.nn.statistics import compute_statistics
from lamforge.train.checkpoint import load_file
from lamforge.train.config import DataSection, ModelSection, RunConfig, TaskData
from lamforge.train.frames import batches_from_atoms
from lamforge.train.loss import LossConfig, Prefactor
from lamforge.train.schedule import LearningRateConfig
from lamforge.train.trainer import TrainerConfig

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepmd" / "water"
TIMESTEP_FS = 0.5


class _Budget:
    """Turns the end of a wall-clock budget into a KeyboardInterrupt (the Trainer's stop path)."""

    def __init__(self, minutes: float) -> None:
        self.seconds = int(minutes * 60)

    def __enter__(self) -> None:
        signal.signal(signal.SIGALRM, self._stop)
        signal.alarm(self.seconds)

    def __exit__(self, *_) -> None:
        signal.alarm(0)

    @staticmethod
    def _stop(*_) -> None:
        raise KeyboardInterrupt


def prepare(workdir: Path) -> None:
    """Datasets: water_train (data_0..2), water_test (data_3), water_curve (every 5th of data_3)
    and water (both, with the index split train = data_0..2, valid = data_3) for the loop."""
    from lamforge.cli.main import main

    store_path = workdir / "store"
    parts = {"water_train": ["data_0", "data_1", "data_2"], "water_test": ["data_3"]}
    for name, folders in parts.items():
        if not (store_path / name).exists():
            sources = [str(WATER / folder) for folder in folders]
            main(["data", "import", "--store", str(store_path), "--dataset", name, *sources,
                  "--quiet"])  # fmt: skip
    store = Store.open(store_path)
    if "water_curve" not in store:
        where = 'pl.col("frame") % 5 == 0'
        main(["data", "filter", str(store_path), "--dataset", "water_test", "--where", where,
              "--output", "water_curve", "--quiet"])  # fmt: skip
    if "water" not in store:
        main(["data", "merge", str(store_path), "--datasets", "water_train", "water_test",
              "--output", "water", "--quiet"])  # fmt: skip
        store = Store.open(store_path)
        num_train = store.info("water_train").num_frames
        index = store.index("water")
        split = (
            pl.when(pl.col("frame") < num_train).then(pl.lit("train")).otherwise(pl.lit("valid"))
        )
        store.write_index("water", index.with_columns(split.alias("split")))
    print(Store.open(store_path).index("water").group_by("split").len())


def teacher_config(workdir: Path, steps: int) -> RunConfig:
    """DPA-2 small in float32, force-dominated deepmd-kit loss, lr 1e-3 -> 1e-5, batch 1."""
    return RunConfig(
        output_dir=workdir / "teacher",
        seed=1,
        model=ModelSection(preset="dpa2_small", precision="float32"),
        data=DataSection(
            store=workdir / "store",
            frames_per_batch=1,
            statistics_frames=20,
            num_threads=1,
            tasks={"water": TaskData(train=("water_train",), validation=("water_curve",))},
        ),
        trainer=TrainerConfig(
            steps=steps,
            learning_rate=LearningRateConfig(start=1e-3, stop=1e-5, decay_steps=50),
            loss=LossConfig(
                energy=Prefactor(start=0.02, limit=1.0), forces=Prefactor(start=1000.0, limit=1.0)
            ),
            log_every=10,
            validate_every=max(steps // 10, 1),
            checkpoint_every=max(steps // 10, 1),
            keep_last=20,
        ),
    )


def teacher(workdir: Path, minutes: float, steps: int) -> None:
    from lamforge.train.run import run

    config = teacher_config(workdir, steps)
    save_yaml(config, workdir / "teacher.yaml")
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with _Budget(minutes):
            run(config, resume=(workdir / "teacher" / "checkpoints").exists())
    except KeyboardInterrupt:
        print(f"teacher: time budget of {minutes} min reached")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    teacher_model_from_checkpoint(workdir / "teacher")
    curves = pl.read_csv(workdir / "teacher" / "curves.csv")
    valid = curves.filter(pl.col("split") == "valid")
    done = int(curves["step"].max())
    timing = {"steps": done, "cpu_s": cpu, "wall_s": wall, "load": _load()}
    (workdir / "teacher" / "timing.json").write_text(json.dumps(timing, indent=2))
    print(f"teacher: {done} steps in {cpu / 60:.1f} CPU min ({wall / 60:.1f} wall min, this call)")
    for row in valid.iter_rows(named=True):
        print(
            f"  step {row['step']:5d} (~{row['step'] * cpu / done / 60:4.1f} CPU min): "
            f"F RMSE {1000 * row['forces_rmse']:.0f} meV/Å, "
            f"E RMSE {1000 * row['energy_rmse_per_atom']:.1f} meV/atom (16 data_3 frames)"
        )


def teacher_model_from_checkpoint(folder: Path) -> Path:
    """``model.pt`` from the newest training checkpoint (when training stopped on its budget)."""
    checkpoints = sorted((folder / "checkpoints").glob("ckpt-*.pt"))
    model_file = folder / "model.pt"
    if model_file.exists() and model_file.stat().st_mtime >= checkpoints[-1].stat().st_mtime:
        return model_file  # written by the finished run
    state = load_file(checkpoints[-1])
    model = DPA2Model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    save_checkpoint(model, folder / "model.pt")
    print(f"teacher model.pt from {checkpoints[-1].name} (step {state['step']})")
    return folder / "model.pt"


def distill_config(workdir: Path, name: str, arguments: argparse.Namespace) -> DistillConfig:
    """The settings of examples/distill_water.yaml, with the bench's budget options."""
    return DistillConfig(
        store=workdir / "store",
        teacher=TeacherSection(model=workdir / "teacher" / "model.pt"),
        source=SourceSection(
            dataset="water", split=True, initial_frames=arguments.initial_frames, holdout_frames=20
        ),
        output_dir=workdir / name,
        student=StudentSection(
            kind="se_e2_a",
            precision="float32",
            head="water",
            cutoff=arguments.student_cutoff,
            max_neighbors=arguments.student_neighbors,
            neurons=(8, 16, 32),
            axis_neurons=8,
            fitting_neurons=(64, 64),
        ),
        trainer=TrainerConfig(
            steps=arguments.student_steps,
            learning_rate=LearningRateConfig(start=2e-3, stop=2e-5, decay_steps=50),
            log_every=50,
            validate_every=0,
            checkpoint_every=500,
        ),
        exploration=ExplorationConfig(
            temperatures=(300.0, 400.0),
            steps=arguments.explore_steps,
            sample_every=20,
            timestep_fs=TIMESTEP_FS,
            max_starts=4,
        ),  # fmt: skip
        trust=TrustLevels(low=0.8, high=3.0, max_candidates=40),
        loop=LoopSection(
            max_iterations=arguments.max_iterations,
            accurate_threshold=0.99,
            dataset_prefix=name,
            max_atoms_per_batch=1024,
            num_threads=1,
        ),
    )


def distill(workdir: Path, name: str, minutes: float, arguments: argparse.Namespace) -> None:
    config = distill_config(workdir, name, arguments)
    save_yaml(config, workdir / f"{name}.yaml")
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with _Budget(minutes):
            Distillation(config).run(on_row=print)
    except KeyboardInterrupt:
        print(f"distill: time budget of {minutes} min reached (rerun to continue)")
    print(
        f"distill stage: {time.process_time() - cpu:.0f} CPU s, "
        f"{time.perf_counter() - wall:.0f} wall s"
    )


def _load() -> float:
    return (
        float(Path("/proc/loadavg").read_text().split()[0])
        if Path("/proc/loadavg").exists()
        else -1
    )


def _models(workdir: Path, name: str):
    state = json.loads((workdir / name / "state.json").read_text())
    student = load_model(workdir / name / state["student"]).eval()
    return load_model(workdir / "teacher" / "model.pt").eval(), student


def _test_frames(workdir: Path):
    return frames_from_store(Store.open(workdir / "store"), "water_test")


def rmse_vs_dft(model, frames, head) -> tuple[float, float]:
    predicted = predict_frames(model, frames, head, max_atoms=1024, num_threads=1)
    energy = [
        (p.calc.results["energy"] - f.calc.results["energy"]) / len(f)
        for p, f in zip(predicted, frames, strict=True)
    ]
    forces = np.concatenate(
        [
            p.calc.results["forces"] - f.calc.results["forces"]
            for p, f in zip(predicted, frames, strict=True)
        ]
    )
    return float(np.sqrt(np.mean(np.square(energy)))), float(np.sqrt(np.mean(np.square(forces))))


def _dynamics(model, start, temperature: float, seed: int, compile: bool = False):
    atoms = start.copy()
    atoms.calc = LAMCalculator(model, num_threads=1, compile=compile)
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        TIMESTEP_FS * units.fs,
        temperature_K=temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=np.random.default_rng(seed + 1),
    )
    return atoms, dynamics


def md_speed(model, start, steps: int, compile: bool = False) -> float:
    """Langevin NVT through the calculator: atoms x steps per CPU second."""
    atoms, dynamics = _dynamics(model, start, 300.0, 0, compile)
    dynamics.run(2)  # warm-up (first calls allocate; ``compile`` compiles here)
    cpu = time.process_time()
    dynamics.run(steps)
    return len(atoms) * steps / (time.process_time() - cpu)


def speeds(
    teacher_model,
    student,
    start,
    steps: int,
    repeats: int,
    compile: bool = False,
) -> dict[str, float]:
    """Best of ``repeats`` interleaved runs of each model (CPU time, same process).

    ``compile`` runs a compressed student through ``torch.compile`` (``LAMCalculator``).
    """
    best = {"teacher": 0.0, "student": 0.0}
    for _ in range(repeats):
        best["teacher"] = max(best["teacher"], md_speed(teacher_model, start, max(steps // 10, 5)))
        best["student"] = max(best["student"], md_speed(student, start, steps, compile))
    return best


def evaluate(workdir: Path, name: str, arguments: argparse.Namespace) -> None:
    """RMSE vs DFT of teacher, student and the compressed student; MD speed (compressed)."""
    frames = _test_frames(workdir)
    teacher_model, nets = _models(workdir, name)
    student = nets.compress(step=arguments.compress_step) if arguments.compress_step > 0 else nets
    results: dict[str, object] = {"held_out_frames": len(frames), "load_start": _load()}
    roles = {"teacher": teacher_model, "student": student}
    if student is not nets:
        roles["student_nets"] = nets
    for role, model in roles.items():
        energy, forces = rmse_vs_dft(model, frames, None)
        parameters = sum(p.numel() for p in model.parameters())
        results[role] = {
            "energy_rmse_mev_per_atom": 1000 * energy,
            "forces_rmse_mev_per_a": 1000 * forces,
            "parameters": parameters,
        }
        print(
            f"{role}: E RMSE {1000 * energy:.2f} meV/atom, F RMSE {1000 * forces:.1f} meV/Å "
            f"vs DFT on {len(frames)} data_3 frames; {parameters} parameters"
        )
    ratio = (
        results["student"]["forces_rmse_mev_per_a"] / results["teacher"]["forces_rmse_mev_per_a"]
    )
    results["forces_rmse_ratio"] = ratio
    best = speeds(
        teacher_model, student, frames[0], arguments.speed_steps, 3, compile=arguments.compile
    )
    results["md_speed_atom_steps_per_cpu_s"] = {**best, "ratio": best["student"] / best["teacher"]}
    results["load_end"] = _load()
    print(
        f"F RMSE student/teacher {ratio:.2f}x; MD speed (1 thread, {len(frames[0])} atoms, CPU "
        f"time, best of 3): teacher {best['teacher']:.0f}, student {best['student']:.0f} "
        f"atom-steps/s; student/teacher = {best['student'] / best['teacher']:.1f}x "
        f"(load average {results['load_start']:.1f} -> {results['load_end']:.1f})"
    )
    (workdir / f"evaluate_{name}.json").write_text(json.dumps(results, indent=2))


def untrained_models(workdir: Path, arguments: argparse.Namespace):
    """A float32 dpa2_small teacher and the bench's se_e2_a student, both untrained.

    Environment statistics (and the student's energy bias) come from 20 water_train frames, so
    the models see realistic descriptor magnitudes; the weights are the random initialisation,
    which costs the same per step as trained weights.
    """
    frames = frames_from_store(Store.open(workdir / "store"), "water_train", range(20))
    teacher_model = DPA2Model(dpa2_small(("O", "H"), precision="float32"))
    specs = sorted(set(teacher_model.descriptor.neighbor_specs().values()), reverse=True)
    compute_statistics(
        teacher_model,
        [model_input_from_atoms([atoms], teacher_model.elements, specs, teacher_model.dtype, 1)
         for atoms in frames],
    )  # fmt: skip
    student_section = distill_config(workdir, arguments.name, arguments).student
    student = student_section.build(teacher_model.elements)

    def build(chunk, elements, block_specs):
        return model_input_from_atoms(chunk, elements, block_specs, student.dtype, 1)

    student_specs = sorted(set(student.descriptor.neighbor_specs().values()), reverse=True)
    samples = batches_from_atoms(
        frames, student_section.head, student.elements, student_specs, build
    )
    initialize_model(student, {student_section.head: samples})
    if arguments.compress_step > 0:
        student = student.compress(step=arguments.compress_step)
    return teacher_model.eval(), student.eval()


def speed(workdir: Path, arguments: argparse.Namespace) -> None:
    """MD speed of teacher and student side by side (CPU time), without trained models."""
    teacher_model, student = untrained_models(workdir, arguments)
    start = _test_frames(workdir)[0]
    load_start = _load()
    best = speeds(
        teacher_model, student, start, arguments.speed_steps, repeats=3, compile=arguments.compile
    )
    parameters = {
        role: sum(p.numel() for p in model.parameters())
        for role, model in (("teacher", teacher_model), ("student", student))
    }
    student_kind = (
        f"compressed (step {arguments.compress_step})" if arguments.compress_step > 0 else "nets"
    ) + (", torch.compile" if arguments.compile else "")
    print(
        f"MD speed (untrained, 1 thread, {len(start)} atoms, CPU time, best of 3; student "
        f"{student_kind}): "
        f"teacher {best['teacher']:.0f}, student {best['student']:.0f} atom-steps per CPU s; "
        f"student/teacher = {best['student'] / best['teacher']:.1f}x "
        f"(parameters {parameters['teacher']} / {parameters['student']}; "
        f"load average {load_start:.2f} -> {_load():.2f})"
    )


def nvt(workdir: Path, name: str, role: str, arguments: argparse.Namespace) -> None:
    """NVT at 300 K from the first data_3 frame; positions and temperature every record_every.

    The student runs as it would in production: compressed (``--compress-step``, 0 for its nets)
    and, with ``--compile``, through ``torch.compile``.
    """
    picoseconds, record_every = arguments.ps, arguments.record_every
    compile = False
    if role == "student":
        state = json.loads((workdir / name / "state.json").read_text())
        model = load_model(workdir / name / state["student"]).eval()
        if arguments.compress_step > 0:
            model = model.compress(step=arguments.compress_step)
            compile = arguments.compile
    else:
        model = load_model(workdir / "teacher" / "model.pt").eval()
    start = _test_frames(workdir)[0]
    atoms, dynamics = _dynamics(model, start, 300.0, 3, compile)
    steps = int(round(picoseconds * 1000 / TIMESTEP_FS))
    positions, temperatures = [], []
    wall, cpu = time.perf_counter(), time.process_time()
    for record in range(1, steps // record_every + 1):
        dynamics.run(record_every)
        positions.append(atoms.get_positions(wrap=True))
        temperatures.append(atoms.get_temperature())
        if record % 20 == 0 or record == steps // record_every:  # a cut run stays usable
            np.savez_compressed(
                _nvt_path(workdir, name, role),
                positions=np.array(positions),
                temperatures=np.array(temperatures),
                numbers=atoms.numbers,
                cell=atoms.cell.array,
                time_ps=np.arange(1, len(positions) + 1) * record_every * TIMESTEP_FS / 1000,
                cpu_s=time.process_time() - cpu,
                wall_s=time.perf_counter() - wall,
            )
    print(f"{role}: {picoseconds} ps in {time.process_time() - cpu:.0f} CPU s")


def _nvt_path(workdir: Path, name: str, role: str) -> Path:
    return workdir / (f"nvt_{name}_student.npz" if role == "student" else "nvt_teacher.npz")


def _pair_distances(positions, lengths, first, second):
    delta = positions[first][:, None, :] - positions[second][None, :, :]
    delta -= lengths * np.round(delta / lengths)
    return np.linalg.norm(delta, axis=-1)


def stability(path: Path) -> dict[str, float]:
    """Temperature, closest contacts and intact molecules along a recorded trajectory."""
    data = np.load(path)
    numbers, lengths = data["numbers"], np.diag(data["cell"])
    oxygen, hydrogen = numbers == 8, numbers == 1
    intact, min_oo, min_any, max_oh, collapse = [], np.inf, np.inf, 0.0, None
    for time_ps, positions in zip(data["time_ps"], data["positions"], strict=True):
        oo = _pair_distances(positions, lengths, oxygen, oxygen)
        oh = _pair_distances(positions, lengths, oxygen, hydrogen)
        min_oo = min(min_oo, float(oo[np.triu_indices(len(oo), 1)].min()))
        if collapse is None and min_oo < 2.2:  # liquid water has no O-O pair below ~2.4 Å
            collapse = float(time_ps)
        min_any = min(min_any, float(oh.min()))
        nearest_o = oh.min(axis=0)  # every H to its nearest O
        max_oh = max(max_oh, float(nearest_o.max()))
        # A molecule is intact when its O has exactly two H within 1.3 Å.
        intact.append(float(((oh < 1.3).sum(axis=1) == 2).mean()))
    temperatures = data["temperatures"]
    skip = len(temperatures) // 5
    return {
        "time_ps": float(data["time_ps"][-1]),
        "finite": bool(np.isfinite(data["positions"]).all()),
        "temperature_mean": float(temperatures[skip:].mean()),
        "temperature_std": float(temperatures[skip:].std()),
        "min_oo_distance": min_oo,
        "first_oo_below_2.2_ps": -1.0 if collapse is None else collapse,
        "min_oh_distance": min_any,
        "max_h_to_nearest_o": max_oh,
        "intact_molecules_min": float(min(intact)),
        "cpu_s": float(data["cpu_s"]),
    }


def rdf_oo(path: Path, r_max: float = 6.0, bins: int = 120):
    """O-O g(r) (minimum image, orthorhombic cell) over the last 80 % of a trajectory."""
    data = np.load(path)
    numbers, lengths = data["numbers"], np.diag(data["cell"])
    oxygen = numbers == 8
    frames = data["positions"][len(data["positions"]) // 5 :]
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    for positions in frames:
        distances = _pair_distances(positions, lengths, oxygen, oxygen)
        counts += np.histogram(distances[np.triu_indices(int(oxygen.sum()), 1)], bins=edges)[0]
    num_o = int(oxygen.sum())
    density = num_o / float(np.prod(lengths))
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (len(frames) * num_o / 2 * density * shell)
    return 0.5 * (edges[1:] + edges[:-1]), g


def report(workdir: Path, name: str) -> None:
    """Stability numbers and the O-O RDF of student, teacher and the DFT frames (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, object] = {}
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for role in ("student", "teacher"):
        path = _nvt_path(workdir, name, role)
        if not path.exists():
            continue
        numbers = stability(path)
        r, g = rdf_oo(path)
        numbers["first_peak_r"] = float(r[np.argmax(g)])
        numbers["first_peak_g"] = float(g.max())
        summary[role] = numbers
        axis.plot(r, g, label=f"{role} ({numbers['time_ps']:g} ps NVT)")
        print(f"{role}: " + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()))
    store = Store.open(workdir / "store")
    dft = frames_from_store(store, "water_test")
    reference = workdir / "dft_frames.npz"
    np.savez_compressed(
        reference,
        positions=np.array([a.get_positions(wrap=True) for a in dft]),
        temperatures=np.zeros(len(dft)),
        numbers=dft[0].numbers,
        cell=dft[0].cell.array,
        time_ps=np.zeros(len(dft)),
        cpu_s=0.0,
    )
    r, g = rdf_oo(reference)
    summary["dft_first_peak_r"] = float(r[np.argmax(g)])
    axis.plot(r, g, "k:", label="DFT frames (data_3)")
    axis.set_xlabel("r (Å)")
    axis.set_ylabel("g_OO(r)")
    axis.set_title("Water O-O RDF, 300 K")
    axis.legend()
    figure.tight_layout()
    figure.savefig(workdir / f"rdf_{name}.png", dpi=120)
    (workdir / f"nvt_{name}.json").write_text(json.dumps(summary, indent=2))
    print(f"written {workdir / f'rdf_{name}.png'} and {workdir / f'nvt_{name}.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = ["prepare", "teacher", "distill", "evaluate", "nvt", "report", "speed"]
    parser.add_argument("stage", choices=stages)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--minutes", type=float, default=60.0, help="wall budget of the stage")
    parser.add_argument("--teacher-steps", type=int, default=16000)
    parser.add_argument("--name", default="distill", help="distillation run (folder, prefix)")
    parser.add_argument("--student-cutoff", type=float, default=6.0)
    parser.add_argument("--student-neighbors", type=int, default=112)
    parser.add_argument("--student-steps", type=int, default=3000, help="per loop iteration")
    parser.add_argument("--max-iterations", type=int, default=6)
    parser.add_argument("--initial-frames", type=int, default=320, help="teacher-labelled")
    parser.add_argument("--explore-steps", type=int, default=200, help="per MD run")
    parser.add_argument("--speed-steps", type=int, default=100)
    parser.add_argument(
        "--compress-step", type=float, default=0.05,
        help="speed, evaluate, nvt: knot spacing of the student's embedding table (0: nets)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="speed, evaluate, nvt: run the compressed student through torch.compile",
    )  # fmt: skip
    parser.add_argument("--role", choices=["student", "teacher"], default="student")
    parser.add_argument("--ps", type=float, default=10.0, help="NVT length (ps)")
    parser.add_argument("--record-every", type=int, default=50, help="NVT steps between frames")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    workdir = arguments.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if arguments.stage == "prepare":
        prepare(workdir)
    elif arguments.stage == "teacher":
        teacher(workdir, arguments.minutes, arguments.teacher_steps)
    elif arguments.stage == "distill":
        distill(workdir, arguments.name, arguments.minutes, arguments)
    elif arguments.stage == "evaluate":
        evaluate(workdir, arguments.name, arguments)
    elif arguments.stage == "nvt":
        nvt(workdir, arguments.name, arguments.role, arguments)
    elif arguments.stage == "speed":
        speed(workdir, arguments)
    else:
        report(workdir, arguments.name)


if __name__ == "__main__":
    main()
