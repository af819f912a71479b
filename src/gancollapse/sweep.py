"""The processes of a sweep: commands run a few at a time, stopped together by one signal.

:func:`run_commands` runs training (or sampling) commands ``jobs`` at a time with one log file each, for
:mod:`gancollapse.benchmark`, :mod:`gancollapse.reproduce` and ``scripts/diagnose_collapse.py``; SIGINT or SIGTERM
stops the whole sweep (:class:`SweepInterrupted`), and :func:`exit_when_stopped` turns that into the shell's exit
status for a command-line entry point.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a sweep (:func:`run_commands`); ``signum`` is the signal, passed on to the
    commands that were running. A KeyboardInterrupt, so code that handles Ctrl-C handles it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def _stop_sweep(signum: int, frame: Any) -> None:
    raise SweepInterrupted(signum)


def exit_when_stopped(main: Callable[..., Any]) -> Callable[..., Any]:
    """``main`` exiting with 128 + the signal's number (the shell's convention) and no traceback when a sweep it
    runs was stopped by a signal (:class:`SweepInterrupted`; :func:`run_commands` has said what it stopped)."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except SweepInterrupted as stop:
            raise SystemExit(128 + stop.signum) from None

    return wrapped


def run_commands(commands: Sequence[Sequence[str]], jobs: int = 2, threads: int = 1, log_dir: Path | None = None,
                 grace_s: float = 60.0) -> list[int]:
    """Run the commands ``jobs`` at a time (each with ``threads`` torch threads), output to
    ``<log_dir>/<i>.log``; returns the exit codes (a failed run does not stop the others: the report lists it).

    SIGINT (Ctrl-C, ``kill -INT``) or SIGTERM (``kill``) stops the sweep: no further command starts, the running
    ones get the same signal (a training run then saves its checkpoint and exits; one still alive after
    ``grace_s`` seconds is terminated), and :class:`SweepInterrupted` propagates, so a caller never mistakes the
    interrupted runs for failed ones (and retries them). Both handlers are installed for the sweep, also where
    the runner was started with SIGINT ignored (a background job of a script); without them a plain
    ``with ThreadPoolExecutor`` would run every queued command after Ctrl-C, and SIGTERM would leave the running
    commands orphaned."""
    if int(jobs) < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()
    stopping = threading.Event()

    def one(item: tuple[int, Sequence[str]]) -> int:
        i, cmd = item
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            with lock:  # under the lock, so that no command starts (nor writes its log) after the stop's signals
                if stopping.is_set():
                    return 130
                out = None
                if log_dir is not None:
                    out = stack.enter_context(open(log_dir / f"{i:03d}.log", "w"))
                    out.write(" ".join(cmd) + "\n")
                    out.flush()
                proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
                running.add(proc)
            rc = proc.wait()
        with lock:
            running.discard(proc)
        print(f"[{'ok' if rc == 0 else f'exit {rc}'}] {time.perf_counter() - t0:7.1f} s  {' '.join(cmd[2:5])}",
              flush=True)
        return rc

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop_sweep) for sig in (signal.SIGINT, signal.SIGTERM)}
    pool = ThreadPoolExecutor(max_workers=int(jobs))
    try:
        futures = [pool.submit(one, item) for item in enumerate(commands)]
        return [f.result() for f in futures]
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        with lock:
            stopping.set()
            alive = list(running)
        for proc in alive:
            proc.send_signal(signum)
        for proc in alive:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(f"{signal.Signals(signum).name}: {len(alive)} running command(s) stopped, the queued ones not started; "
              "a rerun resumes", flush=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


__all__ = ["SweepInterrupted", "exit_when_stopped", "run_commands"]
