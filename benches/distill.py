"""Distillation acceptance benchmark on liquid water (DeePMD data in ../shared/data).

Stages (each resumable, results in WORKDIR; run them in order):

    python benches/distill.py prepare  --workdir W          # import water, 90/10 split
    python benches/distill.py teacher  --workdir W --minutes 15   # train a dpa2_small teacher
    python benches/distill.py distill  --workdir W --minutes 10   # lamforge distill (se_e2_a)
    python benches/distill.py evaluate --workdir W --md-ps 1.0    # RMSE, MD speed, NVT, RDF
    python benches/distill.py speed --workdir W --name distill,distill_c5   # speeds side by side

``teacher`` and ``distill`` stop at their time budget (a SIGALRM turned into the Ctrl-C path of
the Trainer, which leaves a checkpoint), so the numbers belong to a stated CPU budget. Everything
runs with one torch thread and one neighbour-search thread so that speeds are comparable.
``evaluate`` prints the energy/force RMSE of teacher and student against DFT on the held-out
(valid) frames, the MD speed of both through the ASE calculator (atoms x steps / s), and the
student's NVT run at 300 K with the O-O radial distribution next to a (shorter) teacher run.
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
from lamforge.distill.teacher import frames_from_store, predict_frames
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.config import ModelConfig
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.train.checkpoint import load_file
from lamforge.train.config import DataSection, ModelSection, RunConfig, TaskData
from lamforge.train.schedule import LearningRateConfig
from lamforge.train.trainer import TrainerConfig

WATER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepmd" / "water"


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
    from lamforge.cli.main import main

    store = workdir / "store"
    if not (store / "water").exists():
        sources = [str(path) for path in sorted(WATER.glob("data_*"))]
        main(
            [
                "data",
                "import",
                "--store",
                str(store),
                "--dataset",
                "water",
                *sources,
                "--code",
                "CP2K",
                "--functional",
                "SCAN",
                "--quiet",
            ]
        )
        main(
            [
                "data",
                "split",
                str(store),
                "--dataset",
                "water",
                "--fractions",
                "0.9",
                "0.1",
                "--seed",
                "0",
            ]
        )


def teacher(workdir: Path, minutes: float, steps: int) -> None:
    from lamforge.train.run import run

    config = RunConfig(
        output_dir=workdir / "teacher",
        model=ModelSection(preset="dpa2_small", precision="float32"),
        data=DataSection(
            store=workdir / "store",
            frames_per_batch=1,
            statistics_frames=20,
            num_threads=1,
            tasks={"water": TaskData(train=("water",), split=True)},
        ),
        trainer=TrainerConfig(
            steps=steps,
            learning_rate=LearningRateConfig(start=1e-3, stop=1e-5, decay_steps=100),
            log_every=10,
            validate_every=500,
            checkpoint_every=100,
        ),
    )
    started = time.perf_counter()
    try:
        with _Budget(minutes):
            run(config, resume=(workdir / "teacher" / "checkpoints").exists())
    except KeyboardInterrupt:
        print(f"teacher: time budget of {minutes} min reached")
    teacher_model_from_checkpoint(workdir / "teacher")
    print(f"teacher stage: {time.perf_counter() - started:.0f} s")


def teacher_model_from_checkpoint(folder: Path) -> Path:
    """``model.pt`` from the newest training checkpoint (when training stopped on its budget)."""
    checkpoints = sorted((folder / "checkpoints").glob("ckpt-*.pt"))
    state = load_file(checkpoints[-1])
    model = DPA2Model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    save_checkpoint(model, folder / "model.pt")
    print(f"teacher model.pt from {checkpoints[-1].name} (step {state['step']})")
    return folder / "model.pt"


def distill_config(workdir: Path, name: str, cutoff: float, max_neighbors: int) -> DistillConfig:
    return DistillConfig(
        store=workdir / "store",
        teacher=TeacherSection(model=workdir / "teacher" / "model.pt"),
        source=SourceSection(dataset="water", split=True, initial_frames=80, holdout_frames=20),
        output_dir=workdir / name,
        student=StudentSection(
            kind="se_e2_a",
            precision="float32",
            head="water",
            cutoff=cutoff,
            max_neighbors=max_neighbors,
        ),
        trainer=TrainerConfig(
            steps=1000,
            learning_rate=LearningRateConfig(start=2e-3, stop=2e-5, decay_steps=40),
            log_every=20,
            validate_every=0,
            checkpoint_every=100,
        ),
        exploration=ExplorationConfig(
            temperatures=(300.0, 400.0), steps=60, sample_every=10, timestep_fs=0.5, max_starts=4
        ),
        trust=TrustLevels(low=0.3, high=4.0, max_candidates=24),
        loop=LoopSection(
            max_iterations=3,
            accurate_threshold=0.99,
            dataset_prefix=name,
            max_atoms_per_batch=1024,
            num_threads=1,
        ),
    )


def distill(workdir: Path, minutes: float, name: str, cutoff: float, max_neighbors: int) -> None:
    config = distill_config(workdir, name, cutoff, max_neighbors)
    save_yaml(config, workdir / f"{name}.yaml")
    started = time.perf_counter()
    try:
        with _Budget(minutes):
            Distillation(config).run(on_row=print)
    except KeyboardInterrupt:
        print(f"distill: time budget of {minutes} min reached (rerun to continue)")
    print(f"distill stage: {time.perf_counter() - started:.0f} s")


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


def md(model, start, steps: int, temperature: float = 300.0, seed: int = 0, record_every: int = 0):
    """Langevin NVT through the calculator; returns (atoms x steps / s, recorded positions)."""
    atoms = start.copy()
    atoms.calc = LAMCalculator(model, num_threads=1)
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=np.random.default_rng(seed + 1),
    )
    dynamics.run(2)  # warm-up (first calls allocate)
    recorded = []
    started = time.perf_counter()
    chunk = record_every or steps
    for _ in range(steps // chunk):
        dynamics.run(chunk)
        recorded.append(atoms.get_positions().copy())
    seconds = time.perf_counter() - started
    return len(atoms) * steps / seconds, recorded, atoms


def rdf_oo(frames_positions, atoms, r_max: float = 6.0, bins: int = 60):
    """O-O g(r) (minimum image, orthorhombic cell) averaged over the recorded positions."""
    oxygen = atoms.numbers == 8
    lengths = np.diag(atoms.cell.array)
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    for positions in frames_positions:
        o = positions[oxygen]
        delta = o[:, None, :] - o[None, :, :]
        delta -= lengths * np.round(delta / lengths)
        distance = np.linalg.norm(delta, axis=-1)[np.triu_indices(len(o), 1)]
        counts += np.histogram(distance, bins=edges)[0]
    num_o = int(oxygen.sum())
    density = num_o / atoms.get_volume()
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (len(frames_positions) * num_o / 2 * density * shell)
    return 0.5 * (edges[1:] + edges[:-1]), g


def evaluate(
    workdir: Path, name: str, md_ps: float, teacher_md_ps: float, speed_steps: int
) -> None:
    torch.set_num_threads(1)
    store = Store.open(workdir / "store")
    index = store.index("water")
    valid = index.filter(pl.col("split") == "valid")["frame"].to_list()
    frames = frames_from_store(store, "water", valid)
    state = json.loads((workdir / name / "state.json").read_text())
    student = load_model(workdir / name / state["student"]).eval()
    teacher_model = load_model(workdir / "teacher" / "model.pt").eval()
    results: dict[str, object] = {"held_out_frames": len(frames)}
    for role, model in (("teacher", teacher_model), ("student", student)):
        energy, forces = rmse_vs_dft(model, frames, None)
        parameters = sum(p.numel() for p in model.parameters())
        results[role] = {
            "energy_rmse_mev_per_atom": 1000 * energy,
            "forces_rmse_mev_per_a": 1000 * forces,
            "parameters": parameters,
        }
        print(
            f"{role}: E RMSE {1000 * energy:.2f} meV/atom, F RMSE {1000 * forces:.1f} meV/Å "
            f"vs DFT on {len(frames)} held-out frames; {parameters} parameters"
        )
    start = frames[0]
    teacher_speed, _, _ = md(teacher_model, start, max(speed_steps // 10, 5))
    student_speed, _, _ = md(student, start, speed_steps)
    results["md_speed_atom_steps_per_s"] = {
        "teacher": teacher_speed,
        "student": student_speed,
        "ratio": student_speed / teacher_speed,
    }
    print(
        f"MD speed (1 thread, {len(start)} atoms): teacher {teacher_speed:.0f}, student "
        f"{student_speed:.0f} atom-steps/s; student/teacher = {student_speed / teacher_speed:.1f}x"
    )
    steps = int(md_ps * 2000)
    started = time.perf_counter()
    _, positions, final = md(student, start, steps, record_every=100, seed=3)
    stable = bool(np.isfinite(final.positions).all())
    distances = final.get_all_distances(mic=True)[np.triu_indices(len(final), 1)]
    r, g_student = rdf_oo(positions[len(positions) // 5 :], final)
    _, teacher_positions, _ = md(
        teacher_model, start, int(teacher_md_ps * 2000), record_every=100, seed=3
    )
    _, g_teacher = rdf_oo(teacher_positions[len(teacher_positions) // 5 :], final)
    results["nvt"] = {
        "student_ps": md_ps,
        "teacher_ps": teacher_md_ps,
        "finite": stable,
        "min_distance": float(distances.min()),
        "temperature_final": float(final.get_temperature()),
        "seconds": time.perf_counter() - started,
        "rdf_r": r.tolist(),
        "rdf_student": g_student.tolist(),
        "rdf_teacher": g_teacher.tolist(),
        "first_peak_student": float(r[np.argmax(g_student)]),
        "first_peak_teacher": float(r[np.argmax(g_teacher)]),
    }
    print(
        f"NVT 300 K: student {md_ps} ps finite={stable}, min distance {distances.min():.2f} Å, "
        f"T_final {final.get_temperature():.0f} K; O-O first peak student "
        f"{r[np.argmax(g_student)]:.2f} Å (g={g_student.max():.2f}), teacher ({teacher_md_ps} ps) "
        f"{r[np.argmax(g_teacher)]:.2f} Å (g={g_teacher.max():.2f})"
    )
    (workdir / f"evaluate_{name}.json").write_text(json.dumps(results, indent=2))
    print(f"written {workdir / f'evaluate_{name}.json'}")


def speed(workdir: Path, names: list[str], speed_steps: int, repeats: int = 3) -> None:
    """MD speed of the teacher and of each run's student, interleaved in one process."""
    torch.set_num_threads(1)
    store = Store.open(workdir / "store")
    start = frames_from_store(store, "water", [0])[0]
    models = {"teacher": load_model(workdir / "teacher" / "model.pt").eval()}
    for name in names:
        state = json.loads((workdir / name / "state.json").read_text())
        models[name] = load_model(workdir / name / state["student"]).eval()
    best = dict.fromkeys(models, 0.0)
    for _ in range(repeats):
        for name, model in models.items():
            steps = max(speed_steps // 10, 5) if name == "teacher" else speed_steps
            best[name] = max(best[name], md(model, start, steps)[0])
    for name, value in best.items():
        print(
            f"{name}: {value:.0f} atom-steps/s (best of {repeats}), "
            f"{value / best['teacher']:.1f}x the teacher"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["prepare", "teacher", "distill", "evaluate", "speed"])
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget of the stage")
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--md-ps", type=float, default=1.0, help="student NVT length (ps)")
    parser.add_argument("--teacher-md-ps", type=float, default=0.1)
    parser.add_argument("--speed-steps", type=int, default=100)
    parser.add_argument("--name", default="distill", help="distillation run (folder, prefix)")
    parser.add_argument("--student-cutoff", type=float, default=6.0)
    parser.add_argument("--student-neighbors", type=int, default=120)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    arguments.workdir.mkdir(parents=True, exist_ok=True)
    if arguments.stage == "prepare":
        prepare(arguments.workdir)
    elif arguments.stage == "teacher":
        teacher(arguments.workdir, arguments.minutes, arguments.teacher_steps)
    elif arguments.stage == "distill":
        distill(
            arguments.workdir,
            arguments.minutes,
            arguments.name,
            arguments.student_cutoff,
            arguments.student_neighbors,
        )
    elif arguments.stage == "speed":
        speed(arguments.workdir, arguments.name.split(","), arguments.speed_steps)
    else:
        evaluate(
            arguments.workdir,
            arguments.name,
            arguments.md_ps,
            arguments.teacher_md_ps,
            arguments.speed_steps,
        )


if __name__ == "__main__":
    main()
