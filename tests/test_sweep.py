"""A sweep's processes stop together: SIGINT or SIGTERM to the runner stops the running commands and starts no
queued one (gancollapse.sweep.run_commands)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

# The runner of a four-command sweep, two at a time; each command naps 20 s. Exit 128 + signal when stopped.
_SWEEP = """
import sys
from pathlib import Path
from gancollapse.sweep import exit_when_stopped, run_commands
nap = [sys.executable, "-c", "import time; time.sleep(20)"]
exit_when_stopped(lambda: run_commands([nap] * 4, jobs=2, log_dir=Path(sys.argv[1]), grace_s=30))()
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_the_sweep_instead_of_running_the_queue(tmp_path, signum):
    """The runner starts with SIGINT ignored, as a background job of a script does (and as pytest-xdist's
    workers pass on), and still stops on SIGINT; SIGTERM stops it too instead of orphaning its commands. The
    running naps get the signal (they end at once, not after 20 s or the 30-s grace), the two queued ones never
    start (no log file), and the runner exits 128 + the signal's number."""
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP, str(logs)], preexec_fn=_ignore_sigint)
    deadline = time.monotonic() + 60
    while len(list(logs.glob("*.log"))) < 2 and time.monotonic() < deadline:  # both slots started
        time.sleep(0.1)
    time.sleep(1.0)  # the naps' interpreters are up
    t0 = time.monotonic()
    proc.send_signal(signum)
    rc = proc.wait(timeout=120)
    assert rc == 128 + signum
    assert time.monotonic() - t0 < 15  # the naps were stopped, not waited for
    assert sorted(p.name for p in logs.glob("*.log")) == ["000.log", "001.log"]  # the queue never started
