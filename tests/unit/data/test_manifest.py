"""The datasets manifest: the shipped files are valid and consistent; bad files are rejected."""

import shutil
from pathlib import Path

import pytest

from lamforge.cli.main import main
from lamforge.data.manifest import (
    ManifestError,
    element_union,
    load_manifest,
    load_manifests,
    verify_files,
)

MANIFEST_DIR = Path(__file__).resolve().parents[3] / "datasets_manifest"

VALID = """
name = "toy"
role = "pretrain"
description = "a toy set"
elements = ["H", "O"]
num_elements = 2
weight = 1.0

[frames]
train = 8
test = 2
total = 10
"""


@pytest.fixture(scope="module")
def manifests():
    return load_manifests(MANIFEST_DIR)


def test_paper_pretraining_sets(manifests):
    pretrain = [m for m in manifests if m.role == "pretrain"]
    assert len(pretrain) == 18
    # Cross-checks of the published numbers: 4,045,094 training frames, weights summing to 13.2.
    assert sum(m.frames.train for m in pretrain) == 4_045_094
    assert sum(m.weight for m in pretrain) == pytest.approx(13.2)
    assert {"Drug", "OC2M", "H2O-PD", "Alloy"} <= {m.name for m in pretrain}


def test_downstream_and_local_sets(manifests):
    assert len([m for m in manifests if m.role == "downstream"]) == 14
    local = {m.name: m for m in manifests if m.role == "local"}
    assert set(local) == {
        "mptrj-random-1k", "mptrj-highest-stress-1k", "oc20", "ethanol", "3bpa",
        "water", "water-virial", "nopbc",
    }  # fmt: skip
    assert local["mptrj-random-1k"].num_elements == 85
    assert local["water"].frames.total == 400
    assert all(m.files for m in local.values())


def test_element_union_is_ordered_and_complete(manifests):
    union = element_union(manifests)
    assert union[:3] == ["H", "Li", "Be"]
    assert len(union) >= 85


def _write(tmp_path, text, name="toy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_file_loads(tmp_path):
    manifest = load_manifest(_write(tmp_path, VALID))
    assert manifest.frames.total == 10
    assert manifest.elements == ("H", "O")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("role = ", 'role = "x" #'), "role must be one of"),
        (("weight = 1.0", "weight = 1.0\ncolour = 3"), r"unknown key\(s\) \['colour'\]"),
        (('["H", "O"]', '["H", "Xx"]'), "unknown chemical symbol"),
        (("num_elements = 2", "num_elements = 3"), "num_elements = 3"),
        (("total = 10", "total = 11"), "train \\+ frames.test"),
        (("weight = 1.0", "weight = true"), "weight: expected"),
        (("weight = 1.0", ""), "needs a weight"),
        (("train = 8", "train = 8\nvalid = 1"), r"frames: unknown key"),
        (('name = "toy"', ""), "missing required key 'name'"),
        (("[frames]", "[frames"), "not valid TOML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, change, message):
    path = _write(tmp_path, VALID.replace(*change))
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_local_file_entries_are_checked(tmp_path):
    text = VALID.replace('"pretrain"', '"local"').replace("weight = 1.0", "")
    with pytest.raises(ManifestError, match="lists its files"):
        load_manifest(_write(tmp_path, text))
    entry = '\n[[files]]\npath = "a.txt"\nbytes = 1\nsha256 = "abc"\n'
    with pytest.raises(ManifestError, match="64 hex"):
        load_manifest(_write(tmp_path, text + entry))
    entry = f'\n[[files]]\npath = "../a.txt"\nbytes = 1\nsha256 = "{"0" * 64}"\n'
    with pytest.raises(ManifestError, match="relative to the data root"):
        load_manifest(_write(tmp_path, text + entry))


def test_duplicate_names_are_rejected(tmp_path):
    _write(tmp_path, VALID, "a.toml")
    _write(tmp_path, VALID, "b.toml")
    with pytest.raises(ManifestError, match="appears in"):
        load_manifests(tmp_path)


def test_checksums_match_shared_data(manifests, shared_data):
    for manifest in manifests:
        assert verify_files(manifest, shared_data) == [], manifest.name


def test_verify_detects_changed_and_missing_files(manifests, shared_data, tmp_path):
    water = next(m for m in manifests if m.name == "water")
    shutil.copytree(shared_data / "deepmd", tmp_path / "deepmd")
    changed = tmp_path / water.files[0].path
    changed.write_bytes(changed.read_bytes()[:-1] + b"#")
    (tmp_path / water.files[1].path).unlink()
    problems = {p.path: p.problem for p in verify_files(water, tmp_path)}
    assert problems == {water.files[0].path: "checksum differs", water.files[1].path: "missing"}


def test_cli(capsys):
    args = ["datasets", "--manifest-dir", str(MANIFEST_DIR)]
    assert main([*args, "validate"]) == 0
    assert main([*args, "list", "--role", "pretrain"]) == 0
    assert "OC2M" in capsys.readouterr().out
    assert main([*args, "elements"]) == 0
    assert "elements: H " in capsys.readouterr().out


def test_cli_invalid_manifest_exits_with_message(tmp_path, capsys):
    _write(tmp_path, VALID.replace("weight = 1.0", "weight = -1.0"))
    assert main(["datasets", "--manifest-dir", str(tmp_path), "validate"]) == 1
    assert "weight must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="weight must be positive"):
        main(["datasets", "--manifest-dir", str(tmp_path), "list"])


def test_the_manifest_ships_inside_the_package():
    from lamforge.data.manifest import PACKAGED_MANIFEST_DIR

    packaged = sorted(p.name for p in PACKAGED_MANIFEST_DIR.glob("*.toml"))
    assert len(packaged) == len(load_manifests(PACKAGED_MANIFEST_DIR)) >= 40
    assert packaged == sorted(p.name for p in MANIFEST_DIR.glob("*.toml"))
