"""How fast the shell commands a manager or a script runs answer: ``inspector tools`` and
``inspector history report`` (issue: < 1.5 s, i.e. no model stack imported), each run as a new
process the way a shell runs it, on a workspace with tools and a history of 10 000 events.

    .venv/bin/python -m benchmarks.cli_latency
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.records.history import open_history
from core.records.verdicts import FAIL, PASS, TRIGGER, VerdictRecord
from core.store.settings import load_settings
from core.store.tools import ToolStore

COMMANDS = (("tools",), ("history", "report", "yield"), ("history", "report", "fpy"))
RUNS = 7


def workspace(root: Path) -> Path:
    store = ToolStore(root)
    for name in ("weld", "label", "surface"):
        store.create(name)
    history = open_history(load_settings(root), root)
    recorder = history.recorder("bench")
    start = time.time() - 86400
    for i in range(10_000):
        fail = i % 17 == 0
        recorder.remember([VerdictRecord(start + i * 8, "weld", FAIL if fail else PASS,
                                         "crack" if fail else None, 0.9 if fail else 0.1, 0.5,
                                         "v1", TRIGGER, trigger_id=str(i))])
    assert recorder.flush(60)
    history.close()
    return root


def main() -> None:
    root = workspace(Path(tempfile.mkdtemp(prefix="cli-bench-")))
    env = {**os.environ, "INSPECTOR_HOME": str(root)}
    print(f"| command | median s | max s ({RUNS} runs, each a new process) |\n|---|---|---|")
    for command in COMMANDS:
        times = []
        for _ in range(RUNS):
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-m", "core", *command], env=env, check=True,
                           capture_output=True)
            times.append(time.perf_counter() - begin)
        print(f"| inspector {' '.join(command)} | {statistics.median(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()
