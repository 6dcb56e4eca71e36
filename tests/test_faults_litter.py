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

import pytest

from conftest import run_cli
from test_faults_silent import Disk  # a real tmpfs that can be filled and freed

# A writer that stops inside an atomic write and a report folder, as a killed process would.
WRITER = """
import sys, time
from pathlib import Path
from finscale.atomic import atomic_path, owned_tempdir
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


@pytest.fixture(scope="module")
def old_csv(tmp_path_factory, sp500) -> Path:
    """A local CSV of 2005-2010 bars."""
    path = tmp_path_factory.mktemp("csv") / "old.csv"
    sp500[(sp500.Date >= "2005-01-01") & (sp500.Date < "2011-01-01")].to_csv(path, index=False)
    return path


@pytest.mark.parametrize("bound, value, needle", [
    ("--start", "2014-01-01", "data.start 2014-01-01 is after its last date"),
    ("--end", "2004-01-01", "data.end 2004-01-01 is before its first date")])
def test_a_date_window_outside_the_file_is_one_line_naming_file_column_and_range(
        tmp_path, old_csv, bound, value, needle):
    r = run_cli("data", "fetch", f"file:{old_csv}", bound, value, "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line and str(old_csv) in line and "0 rows" in line, line
    assert "Date column runs 2005-01-03..2010-12-31" in line and needle in line, line
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]   # nothing written


def test_a_full_data_dir_is_one_line_naming_the_file_and_nothing_is_left(tmp_path, monkeypatch):
    disk = Disk(tmp_path / "data", monkeypatch)
    try:
        if not disk.real:
            pytest.skip("needs a real small filesystem (root, to mount a tmpfs)")
        disk.fill()
        r = run_cli("data", "fetch", "sample:sp500", "--data-dir", str(disk.path))
        assert r.returncode == 1
        line = r.stderr.strip()   # was "error: [Errno 28] Error writing bytes to file. Detail: ..."
        assert "\n" not in line and f"{disk.path / 'raw' / 'sp500.parquet'}: cannot write" in line, line
        assert "no space left on device" in line, line
        assert [p.name for p in disk.path.rglob("*") if p.is_file()] == ["filler"]   # no temp, no manifest
        disk.free()
        assert run_cli("data", "fetch", "sample:sp500", "--data-dir", str(disk.path)).returncode == 0
    finally:
        disk.unmount()
