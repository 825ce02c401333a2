"""``lamforge train``, ``lamforge finetune`` and ``lamforge test``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _load(arguments: argparse.Namespace):
    from lamforge.config import ConfigError, load_yaml
    from lamforge.train.config import RunConfig

    try:
        config = load_yaml(RunConfig, arguments.config)
    except ConfigError as error:
        raise SystemExit(f"lamforge: invalid config: {error}") from None
    if arguments.output_dir is not None:
        config = dataclasses.replace(config, output_dir=arguments.output_dir)
    if arguments.steps is not None:
        config = dataclasses.replace(
            config, trainer=dataclasses.replace(config.trainer, steps=arguments.steps)
        )
    return config


def _report(result) -> None:
    print(f"trained {result.steps} steps in {result.seconds:.1f} s")
    for task, metrics in result.validation.items():
        print(f"  {task}: {_metrics_line(metrics)}")
    if result.last_checkpoint is not None:
        print(f"last checkpoint: {result.last_checkpoint}")


def _metrics_line(metrics) -> str:
    def show(value, scale, unit):
        return "n/a" if value is None else f"{value * scale:.2f} {unit}"

    return (
        f"frames {metrics.num_frames}, "
        f"E RMSE {show(metrics.energy_rmse_per_atom, 1000, 'meV/atom')}, "
        f"F RMSE {show(metrics.forces_rmse, 1000, 'meV/Å')}, "
        f"V RMSE {show(metrics.virial_rmse_per_atom, 1000, 'meV/atom')}"
    )


def _train(arguments: argparse.Namespace) -> int:
    from lamforge.train.run import run

    config = _load(arguments)
    if config.finetune is not None and not arguments.finetuning:
        raise SystemExit("lamforge train: the config has a finetune section; use lamforge finetune")
    if arguments.finetuning:
        if config.finetune is None and arguments.pretrained is None:
            raise SystemExit("lamforge finetune: give --pretrained or a finetune section")
        from lamforge.train.config import FinetuneSection

        section = config.finetune or FinetuneSection(pretrained=arguments.pretrained)
        if arguments.pretrained is not None:
            section = dataclasses.replace(section, pretrained=arguments.pretrained)
        if arguments.from_head is not None:
            section = dataclasses.replace(
                section, from_head=None if arguments.from_head == "RANDOM" else arguments.from_head
            )
        config = dataclasses.replace(config, finetune=section)
    import torch.distributed as dist

    result = run(config, resume=arguments.resume, progress=not arguments.quiet)
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    _report(result)
    print(f"model: {Path(config.output_dir) / 'model.pt'}")
    return 0


def _test(arguments: argparse.Namespace) -> int:
    from lamforge.nn.checkpoint import load_checkpoint
    from lamforge.train.evaluate import (
        dataset_batches,
        evaluate_dataset,
        plot_parity,
        zero_shot_model,
    )

    model = load_checkpoint(arguments.model)
    head = arguments.head
    if head is None:
        model.head(None)  # raises, naming the heads, when the model has several
        head = next(iter(model.heads))
    results = []
    for dataset in arguments.dataset:
        evaluated = model
        if arguments.zero_shot:
            bias = dataset_batches(arguments.store, dataset, model, head, arguments.bias_split)
            evaluated = zero_shot_model(model, bias, head, task=dataset)
        batches = dataset_batches(
            arguments.store, dataset, evaluated, dataset if arguments.zero_shot else head,
            arguments.split,
        )  # fmt: skip
        results.append(evaluate_dataset(evaluated, batches, dataset))
    if arguments.json:
        print(json.dumps({r.dataset: dataclasses.asdict(r.metrics) for r in results}, indent=2))
    else:
        for result in results:
            print(f"{result.dataset}: {_metrics_line(result.metrics)}")
    if arguments.plot is not None:
        print(f"parity plot: {plot_parity(results, arguments.plot)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``train``, ``finetune`` and ``test``."""
    for name, help_text in (
        ("train", "train a model (single- or multi-task) from a YAML config"),
        ("finetune", "fine-tune a pre-trained model on a downstream task"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("config", type=Path, help="run configuration (YAML)")
        parser.add_argument(
            "--resume", action="store_true", help="continue from the last checkpoint"
        )
        parser.add_argument("--output-dir", type=Path, help="override output_dir")
        parser.add_argument("--steps", type=int, help="override trainer.steps")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "finetune":
            parser.add_argument("--pretrained", type=Path, help="pre-trained model file")
            parser.add_argument("--from-head", help="pre-trained head to start from, or RANDOM")
        parser.set_defaults(handler=_train, finetuning=name == "finetune")

    parser = subparsers.add_parser("test", help="errors of a model on store datasets")
    parser.add_argument("--model", type=Path, required=True, help="model file (model.pt)")
    parser.add_argument("--store", type=Path, required=True, help="lamforge store")
    parser.add_argument("--dataset", nargs="+", required=True, help="dataset(s) to evaluate")
    parser.add_argument("--head", help="head to use (required with several heads)")
    parser.add_argument("--split", help="evaluate only this split of the index (e.g. test)")
    parser.add_argument(
        "--zero-shot",
        action="store_true",
        help="re-fit the head's energy bias on the dataset first (no training)",
    )
    parser.add_argument(
        "--bias-split",
        help="split the zero-shot bias is fitted on (default: every frame of the dataset)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--plot", type=Path, help="write energy/force parity plots (PNG)")
    parser.set_defaults(handler=_test)
