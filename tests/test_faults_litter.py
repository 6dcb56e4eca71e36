"""What a killed process leaves and what bad inputs meet (issue 33, item 12): temp files and
report folders of killed writers are removed by the next run of the study, never a live
writer's; dates outside the data and a full data directory are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

# A writer that stops inside an atomic write and a report folder, as a killed process would.
WRITER = """
import sys, time
from pathlib import Path
from finscale.files import atomic_path, owned_tempdir
root = Path(sys.argv[1])
with atomic_path(root / "final" / "r1" / "status.json") as tmp:
    owned_tempdir(root, ".report")
    print(tmp, flush=True)
    sys.stdin.readline()     # the live writer goes on when told; the killed one never does
    tmp.write_text("{}")
"""


def writer(root: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_next_run_removes_litter_of_killed_writers_only(tmp_path, shared_data):
    study = tmp_path / "smoke"
    killed, killed_tmp = writer(study)
    live, live_tmp = writer(study / "other")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    foreign = study / ".notes.tmp"   # not our naming: never ours to remove
    foreign.write_text("x")
    assert killed_tmp.exists() and killed_tmp.stat().st_size == 0
    assert len(list(study.glob(".report.~*"))) == 1
    r = run_cli("run", "smoke", "--phase", "data", "--no-monitor",
                "--set", f"output_dir={json.dumps(str(tmp_path))}", "--set", f"data.data_dir={json.dumps(str(shared_data))}")
    assert r.returncode == 0, r.stderr
    assert not killed_tmp.exists() and not list(study.glob(".report.~*"))
    assert live_tmp.exists() and list((study / "other").glob(".report.~*"))   # its writer still runs
    assert foreign.exists()
    live.communicate("go\n", timeout=30)
    assert live.returncode == 0 and (study / "other" / "final" / "r1" / "status.json").read_text() == "{}"
