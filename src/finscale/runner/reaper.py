"""Tie the local Ray cluster a driver started to the driver's life, kill -9 included.

Ray's local cluster already fate-shares with its driver on Linux (GCS and raylet get SIGKILL
when the driver dies), but its dashboard and runtime-env agents then wait 60 s trying to report
the raylet's death to the dead GCS (a fixed timeout in Ray), and any process still running is
litter. :func:`start` launches this module as a small process in its own session (so neither
the driver's death nor a Ctrl-C to its terminal reaches it) that records the driver's
descendants every second; once the driver is gone it stops those still alive (SIGTERM, then
SIGKILL) and exits. Only processes the driver started are touched: each is identified by pid
and start time, so a reused pid is never signalled. It consumes the driver's pid; it produces
nothing but the removal of the driver's leftover processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 1.0
GRACE_S = 3.0


def start() -> subprocess.Popen:
    """Launch the reaper of this process's descendants (it exits soon after this process)."""
    return subprocess.Popen([sys.executable, "-m", "finscale.runner.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def watch(driver_pid: int) -> None:
    """Record the driver's descendants while it lives; stop the survivors once it is gone."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, psutil.Process] = {}
    me = os.getpid()
    while _alive(driver):
        try:
            for child in driver.children(recursive=True):
                if child.pid != me:
                    seen.setdefault(child.pid, child)
        except psutil.Error:
            pass   # the driver exited while we looked: sweep below
        time.sleep(POLL_S)
    _stop(list(seen.values()))


def _alive(proc) -> bool:
    """Running and not a zombie (a killed driver its parent has not reaped yet is gone)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stop(procs: list) -> None:
    import psutil

    # is_running() compares the start time too: a pid reused since is not ours
    alive = [p for p in procs if _alive(p)]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _gone, left = psutil.wait_procs(alive, timeout=GRACE_S)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
