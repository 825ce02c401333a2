"""``lamforge data ...`` end to end through the console entry point."""

import json

import numpy as np
import pytest

from lamforge.cli.main import main
from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
from lamforge.data.store import Store


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    tasks = demo_tasks(DemoConfig(frames_per_task=5, seed=1))
    return {task.name: write_extxyz(task, folder / f"{task.name}.extxyz") for task in tasks}


def _run(capsys, *argv):
    code = main(["data", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_stats_split_filter_merge_export(tmp_path, capsys, demo_files):
    store = tmp_path / "store.zarr"
    for name, path in demo_files.items():
        code, out, _ = _run(
            capsys,
            "import",
            path,
            "--store",
            store,
            "--dataset",
            name,
            "--code",
            "ASE",
            "--functional",
            "EMT",
            "--licence",
            "MIT",
            "--quiet",
        )
        assert code == 0 and "imported 5 frames" in out

    code, out, _ = _run(capsys, "stats", store, "--json", "--plots", tmp_path / "plots")
    assert code == 0
    stats = {d["name"]: d for d in json.loads(out)["datasets"]}
    assert set(stats) == set(demo_files)
    assert stats["clusters"]["periodicity"] == {"FFF": 5}
    assert stats["surfaces"]["periodicity"] == {"TTF": 5}
    assert stats["bulk"]["labels"]["virial"] == 5 and stats["clusters"]["labels"]["virial"] == 0
    assert (tmp_path / "plots" / "bulk_elements.png").is_file()
    code, out, _ = _run(capsys, "stats", store, "--dataset", "alloy")
    assert code == 0 and "dataset alloy: 5 frames" in out and "Cu" in out

    code, out, _ = _run(capsys, "validate", store, "--json")
    assert code == 0 and json.loads(out)["errors"] == 0

    code, out, _ = _run(capsys, "info", store, "--json")
    infos = {d["name"]: d for d in json.loads(out)["datasets"]}
    assert infos["bulk"]["num_frames"] == 5 and infos["bulk"]["licence"] == "MIT"
    assert infos["bulk"]["level_of_theory"] == {"code": "ASE", "functional": "EMT", "basis": ""}
    code, out, _ = _run(capsys, "info", store)
    assert code == 0 and "ASE/EMT" in out and "clusters" in out

    code, out, _ = _run(
        capsys, "split", store, "--dataset", "bulk", "--fractions", "0.6", "0.4", "--seed", "3"
    )
    assert code == 0
    assert Store.open(store).index("bulk")["split"].null_count() == 0

    code, out, _ = _run(
        capsys,
        "filter",
        store,
        "--dataset",
        "bulk",
        "--where",
        'pl.col("split") == "train"',
        "--output",
        "bulk_train",
        "--quiet",
    )
    assert code == 0 and "kept 3 of 5 frames" in out

    code, _, err = _run(
        capsys, "merge", store, "--datasets", "bulk", "alloy", "--output", "m", "--quiet"
    )
    assert code == 0, err
    assert Store.open(store).info("m").num_frames == 10

    code, out, _ = _run(
        capsys,
        "export",
        store,
        "--dataset",
        "surfaces",
        "--format",
        "deepmd",
        "--output",
        tmp_path / "dp",
    )
    assert code == 0 and (tmp_path / "dp").is_dir()
    code, out, _ = _run(
        capsys,
        "export",
        store,
        "--dataset",
        "bulk",
        "--format",
        "extxyz",
        "--output",
        tmp_path / "bulk.xyz",
    )
    assert code == 0 and (tmp_path / "bulk.xyz").stat().st_size > 0


def test_validate_exits_nonzero_on_errors(tmp_path, capsys):
    path = tmp_path / "close.xyz"
    path.write_text(
        '2\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"\nH 0 0 0\nH 0 0 0.1\n'
        '2\nProperties=species:S:1:pos:R:3 energy=-1.1 pbc="F F F"\nH 0 0 0\nH 0 0 0.74\n'
    )
    store = tmp_path / "s.zarr"
    assert _run(capsys, "import", path, "--store", store, "--dataset", "h2", "--quiet")[0] == 0
    code, out, _ = _run(capsys, "validate", store)
    assert code == 1
    assert "error   h2 frame 0: [close_atoms] atoms 0.100 Å apart" in out


def test_bad_input_then_resume(tmp_path, capsys, demo_files):
    good = demo_files["bulk"]
    bad = tmp_path / "bad.xyz"
    bad.write_text("1\nProperties=species:S:1:pos:R:3 energy=-1.0\nH 0 0 0\n2\nbroken\nH 0 0 0\n")
    store = tmp_path / "s.zarr"
    code, _, err = _run(capsys, "import", good, bad, "--store", store, "--dataset", "d", "--quiet")
    assert code == 2
    assert "bad.xyz, frame 1: cannot parse" in err and "store is unchanged" in err
    assert Store.open(store).datasets() == []
    code, _, err = _run(capsys, "import", good, bad, "--store", store, "--dataset", "d", "--quiet")
    assert code == 2 and "--resume" in err
    bad.write_text("1\nProperties=species:S:1:pos:R:3 energy=-1.0\nH 0 0 0\n")
    code, out, err = _run(
        capsys, "import", good, bad, "--store", store, "--dataset", "d", "--resume", "--quiet"
    )
    assert code == 0, err
    index = Store.open(store).index("d")
    assert index.height == 6 and index["source_index"].to_list() == [0, 1, 2, 3, 4, 0]


def test_shared_data_subset_through_the_cli(tmp_path, capsys, shared_data):
    store = tmp_path / "s.zarr"
    sources = [shared_data / "deepmd" / "nopbc", shared_data / "deepmd" / "water" / "data_0"]
    code, out, err = _run(
        capsys, "import", *sources, "--store", store, "--dataset", "dp", "--quiet"
    )
    assert code == 0, err
    reader = Store.open(store).reader("dp")
    pbc = reader.read_frames(range(reader.num_frames)).pbc
    assert (~pbc.any(axis=1)).sum() == 2062 and pbc.all(axis=1).sum() == reader.num_frames - 2062
    code, out, _ = _run(capsys, "merge", store, "--datasets", "dp", "dp", "--output", "x")
    assert code == 0  # same level of theory (both unknown) merges
    code, out, err = _run(
        capsys,
        "import",
        shared_data / "mptrj" / "mptrj-random-1k.xyz",
        "--store",
        store,
        "--dataset",
        "mp",
        "--code",
        "VASP",
        "--quiet",
    )
    assert code == 0, err
    code, _, err = _run(capsys, "merge", store, "--datasets", "dp", "mp", "--output", "bad")
    assert code == 2 and "different levels of theory" in err
    assert np.isclose(Store.open(store).info("mp").num_frames, 1000)


def test_quickstart_store_stage(tmp_path):
    from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
    from lamforge.workflows.quickstart import store_stage
    from lamforge.workflows.summary import Stage

    workdir = tmp_path / "qs"
    for frames in (3, 2):  # the second run replaces the datasets instead of failing on them
        tasks = demo_tasks(DemoConfig(frames_per_task=frames))
        for task in tasks:
            write_extxyz(task, workdir / "data" / f"{task.name}.extxyz")
        stage = Stage(name="store")
        store_stage(tasks, workdir, stage, progress=False)
        datasets = stage.metrics["datasets"]
        assert set(datasets) == {"bulk", "surfaces", "clusters", "alloy"}
        store = Store.open(workdir / "store.zarr")
        for name, metrics in datasets.items():
            info = store.info(name)
            assert metrics["frames"] == info.num_frames == frames
            assert metrics["atoms"] == info.num_atoms
            assert metrics["validation_errors"] == 0
        assert datasets["bulk"]["virials"] == frames and datasets["clusters"]["virials"] == 0


@pytest.mark.slow
def test_whole_shared_data(tmp_path, capsys, shared_data):
    """Every file of ../shared/data imports; counts match the inputs; validate runs on it all."""
    from ase.io import iread

    store = tmp_path / "all.zarr"
    groups = {
        "mptrj": sorted((shared_data / "mptrj").glob("*.xyz")),
        "oc20": sorted((shared_data / "oc20").glob("*.traj")),
        "molecules": sorted((shared_data / "molecules").rglob("*.xyz")),
    }
    for name, paths in groups.items():
        code, _, err = _run(
            capsys, "import", *paths, "--store", store, "--dataset", name, "--quiet"
        )
        assert code == 0, err
        expected = sum(1 for path in paths for _ in iread(path, index=":"))
        assert Store.open(store).info(name).num_frames == expected
    code, _, err = _run(
        capsys, "import", shared_data / "deepmd", "--store", store, "--dataset", "deepmd", "--quiet"
    )
    assert code == 0, err
    expected = sum(
        np.load(p, mmap_mode="r").shape[0] for p in (shared_data / "deepmd").rglob("energy.npy")
    )
    assert Store.open(store).info("deepmd").num_frames == expected
    total = sum(Store.open(store).info(name).num_frames for name in Store.open(store).datasets())
    assert total > 13000
    code, out, _ = _run(capsys, "validate", store, "--json")
    report = json.loads(out)
    assert code == (1 if report["errors"] else 0)
    # The shared data is clean DFT data; the only atoms closer than 0.5 Å are the deliberately
    # compressed dimers of ethanol/test_dimers.xyz (H-H down to 0.35 Å), which must be found.
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    sources = Store.open(store).index("molecules")["source"]
    assert errors and all(f["check"] == "close_atoms" for f in errors)
    assert all(sources[f["frame"]].endswith("test_dimers.xyz") for f in errors)
    # MPtrj's highest-stress frames are physical outliers; validate must flag some of them.
    assert any(
        f["check"] == "force_outlier" and f["dataset"] == "mptrj" for f in report["findings"]
    )


def test_data_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for command in ("import", "info", "stats", "validate", "filter", "split", "merge", "export"):
        assert command in out
    assert _run(capsys, "stats", "/nonexistent/store.zarr")[0] == 2
