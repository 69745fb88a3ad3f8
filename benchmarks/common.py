"""Shared by the benchmarks: the machine, the shared datasets, and BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = ("casting", "magnetic_tile", "elpv", "mvtec_bottle")
REPORT = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """One line naming what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({cpu}), {device}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def use_scratch_workspace() -> Path:
    """Benchmarks never touch the station's own tools."""
    home = Path(tempfile.mkdtemp(prefix="inspector-bench-"))
    os.environ["INSPECTOR_HOME"] = str(home)
    return home


def pass_fail_files(dataset: str) -> tuple[list[Path], np.ndarray]:
    """Every image of a set and whether it is a defect (all non-good classes pooled)."""
    from core.datasets import image_files

    root = DATASETS / dataset / "images"
    files, is_defect = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        found = image_files(folder)
        files += found
        is_defect += [folder.name != "good"] * len(found)
    return files, np.array(is_defect)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md, leaving the others alone."""
    text = REPORT.read_text() if REPORT.exists() else (
        "# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each rewrites its own section.\n")
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)
