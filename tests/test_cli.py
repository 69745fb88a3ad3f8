"""The ``inspector`` command end to end, as an engineer or a script would use it."""

import getpass
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import DATASETS, sample_paths


def inspector(home, *args):
    env = {**os.environ, "INSPECTOR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Small train and test folders in the DIR/<class>/ layout, from real casting photos."""
    root = tmp_path_factory.mktemp("cli data")
    for split, skip in (("train", 0), ("test", 10)):
        for name, paths in sample_paths("casting", 10, seed=50, skip=skip).items():
            (root / split / name).mkdir(parents=True)
            for path in paths:
                shutil.copy(path, root / split / name / path.name)
    return root


def test_train_evaluate_predict_export_import(tmp_path, folders):
    home = tmp_path / "home"
    trained = inspector(home, "train", "--tool", "impeller", "--data", str(folders / "train"),
                        "--profile", "fast", "--allow-flips")
    assert trained.returncode == 0, trained.stderr
    assert "trained impeller v001" in trained.stdout and "(active)" in trained.stdout
    assert " on 10 good, 10 defect photos in " in trained.stdout
    assert "extracting features" in trained.stderr

    evaluated = inspector(home, "evaluate", "--tool", "impeller", "--data", str(folders / "test"),
                          "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    assert figures["n"] == 20 and figures["balanced_accuracy"] >= 0.7 and figures["auroc"] >= 0.75
    assert set(figures) >= {"n", "balanced_accuracy", "auroc", "threshold", "confusion"}
    in_words = inspector(home, "evaluate", "--tool", "impeller", "--data", str(folders / "test"))
    assert in_words.returncode == 0, in_words.stderr
    assert f"balanced accuracy {figures['balanced_accuracy']:.3f}" in in_words.stdout
    assert (f"{figures['confusion']['false_fail']} of 10 good photo(s) failed, "
            f"{figures['confusion']['missed_defect']} of 10 defect photo(s) passed") in in_words.stdout
    assert "[" not in in_words.stdout  # no Python list of the confusion matrix

    images = sorted((folders / "test" / "defect").iterdir())[:2]
    predicted = inspector(home, "predict", "--tool", "impeller", *map(str, images), "--json",
                          "--heatmap", str(tmp_path / "heat"))
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert [r["verdict"] in ("PASS", "FAIL") for r in rows] == [True, True]
    assert all((tmp_path / "heat" / f"{i.stem}-heatmap.png").is_file() for i in images)

    listed = inspector(home, "tools")
    assert listed.stdout.startswith("impeller\tclassifier\tfast\tversion=v001")

    for extra, out in (((), "t.inspector"), (("--onnx",), "t.onnx")):
        exported = inspector(home, "export", "--tool", "impeller", *extra, "--out", str(tmp_path / out))
        assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "t.onnx").stat().st_size > 1_000_000
    other = tmp_path / "other"
    imported = inspector(other, "import", str(tmp_path / "t.inspector"))
    assert imported.returncode == 0, imported.stderr
    again = inspector(other, "evaluate", "--tool", "impeller", "--data", str(folders / "test"), "--json")
    assert json.loads(again.stdout)["auroc"] == figures["auroc"]


def test_versions_and_rollback(tmp_path, folders):
    home = tmp_path / "home"
    for seed in ("0", "1"):
        assert inspector(home, "train", "--tool", "t", "--data", str(folders / "train"),
                         "--seed", seed).returncode == 0
    versions = inspector(home, "versions", "--tool", "t").stdout.splitlines()
    assert len(versions) == 2 and versions[1].startswith("* v002")
    first = versions[0].split()[0]
    assert inspector(home, "activate", "--tool", "t", "--version", first).returncode == 0
    assert inspector(home, "versions", "--tool", "t").stdout.splitlines()[0].startswith(f"* {first}")
    assert inspector(home, "set", "--tool", "t", "--threshold", "0.7").returncode == 0

    audit = history_of(home).changes().iloc[::-1]  # every change made here is audited, oldest first
    assert list(audit["action"]) == ["created", "trained", "activated", "trained", "activated",
                                     "activated", "threshold"]
    assert set(audit["actor"]) == {f"cli:{getpass.getuser()}"}
    assert audit.iloc[-1]["details"]["new"] == 0.7


def history_of(home):
    from core.records.history import open_history
    from core.store.settings import load_settings

    return open_history(load_settings(home), root=home)


@pytest.mark.parametrize("args, message", [
    (("evaluate", "--tool", "ghost", "--data", "."), "no tool named 'ghost'"),
    (("train", "--tool", "t", "--data", "/nonexistent"), "no folder at /nonexistent"),
    (("train", "--tool", "t", "--data", str(DATASETS / "casting")),
     "no 'good' sub-folder (its sub-folders are images)"),
    (("import", "/etc/hostname"), "not a Shopfloor Inspector tool file"),
    (("train", "--tool", "../x", "--data", str(DATASETS / "casting" / "images")), "not allowed"),
    (("train", "--tool", "t", "--profile", "huge", "--data", str(DATASETS / "casting" / "images")),
     "unknown network profile 'huge'"),
])
def test_errors_are_one_clear_line_without_traceback(tmp_path, args, message):
    result = inspector(tmp_path / "home", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_predict_refuses_an_unreadable_image(tmp_path, folders):
    home = tmp_path / "home"
    inspector(home, "train", "--tool", "t", "--data", str(folders / "train"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    result = inspector(home, "predict", "--tool", "t", str(broken))
    assert result.returncode == 2 and "not a readable image" in result.stderr
