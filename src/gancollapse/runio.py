"""Run-directory I/O that never loses or corrupts a run (docs/RELIABILITY.md).

* Atomic writes: a file is written to a temporary name in its own directory, fsynced, renamed over the old
  one (``os.replace``) and the directory fsynced, so a kill or power loss at any moment leaves either the old
  or the new file, never a torn one. Leftover temporaries (``.<name>.tmp-<pid>-<hex>``) are removed at the
  next start-up by :func:`clean_stale_temps`.
* Two generations of ``checkpoints/last.ckpt``: before the new one replaces it, the old one is hard-linked to
  ``last-prev.ckpt`` (:class:`AtomicCheckpointIO`, Lightning's ``CheckpointIO`` plugin).
* Safe loading: checkpoints load with ``torch.load(weights_only=True)`` only (tensors and plain values; a
  pickled object is refused, never run), and a run's ``_target_`` values must name an allowed package
  (:func:`check_targets`) before anything is instantiated from someone else's config.
* The run lock (:class:`RunLock`): an ``flock`` on ``<run>/.lock`` held for the whole run.
* Exact resume: the torch, numpy, python and CUDA RNG states as checkpointable plain values
  (:func:`rng_state`, :func:`set_rng_state`); :func:`truncate_metrics` drops metric rows logged after the
  restored step.
* Known failures are :class:`RunError` (what went wrong and how to fix it); :func:`one_line_errors` prints them
  as ``error: <what> — <fix>`` without a traceback unless ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import os
import pickle
import random
import re
import secrets
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf

TMP_MARK = ".tmp-"
LAST, PREV = "last.ckpt", "last-prev.ckpt"
LOCK_NAME = ".lock"
#: package prefixes a loaded run's ``_target_`` values may name (``gancollapse.load(..., trusted=True)``: any)
ALLOWED_TARGETS = ("gancollapse.", "torch.nn.", "torch.optim.", "lightning.", "torchvision.transforms.")


class RunError(Exception):
    """A known failure: ``what`` went wrong and ``fix`` says how to get going again.

    The command-line tools print it as ``error: <what> — <fix>`` and exit with ``code``.
    """

    def __init__(self, what: str, fix: str, code: int = 1) -> None:
        super().__init__(f"{what} — {fix}")
        self.what, self.fix, self.code = what, fix, int(code)


class MissingError(RunError, FileNotFoundError):
    """A path the command needs is not there (a RunError, and a FileNotFoundError for callers that catch it)."""


class CheckpointError(RunError):
    """A checkpoint that cannot be loaded: corrupt, truncated, or holding pickled objects."""


class DiskFullError(RunError):
    """A checkpoint save that ran out of space: the file it would have replaced is kept (atomic saves)."""

    def __init__(self, path: Path, kept_g_step: int | None, err: BaseException) -> None:
        kept = (f"{path.name} from G step {kept_g_step} is kept" if kept_g_step is not None else
                f"the previous {path.name} (if any) is kept")
        super().__init__(f"no space left on the device of {path.parent} while saving {path.name}; {kept} "
                         f"({' '.join(str(err).split())[:80]})",
                         "free space there (or choose another hydra.run.dir) and rerun the same command to resume")
        self.path, self.kept_g_step = path, kept_g_step


#: what torch's zip writer and the OS say when a write runs out of space (torch: a short write is
#: "unexpected pos"; the OS: ENOSPC, or EDQUOT over a quota)
_NO_SPACE = ("unexpected pos", "No space left", "Disk quota exceeded", "failed writing")


def is_disk_full(err: BaseException) -> bool:
    """Whether a failed write ran out of space (see :data:`_NO_SPACE`)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (OSError, RuntimeError)) and any(m in str(err) for m in _NO_SPACE)


# ---------------------------------------------------------------------------- atomic files
def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and platforms) refuse fsync on a directory: nothing more to do
        pass
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """A unique temporary name next to ``path`` (same directory, so ``os.replace`` is an atomic rename)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _keep_generation(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` atomically (a hard link: no data copied, ``path`` never missing)."""
    tmp = temp_path(previous)
    try:
        os.link(path, tmp)
    except OSError:  # filesystems without hard links
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, previous)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], keep_previous: str | Path | None = None) -> None:
    """Write ``path`` through ``write(file)`` so that it is always either the old or the new file.

    ``keep_previous``: first keep the current ``path`` under this name (the previous generation).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.is_file():
            _keep_generation(path, Path(keep_previous))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def clean_stale_temps(*dirs: str | Path) -> list[Path]:
    """Remove temporaries that a killed writer left in ``dirs``; call only while holding the run lock."""
    removed = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def check_writable(*dirs: str | Path) -> None:
    """Create ``dirs`` and write a probe file in each, so an unwritable run fails before any training."""
    for d in dirs:
        d = Path(d)
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = temp_path(d / "write-probe")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise RunError(f"cannot write to {d} ({reason})",
                           "choose a writable run directory with hydra.run.dir=<dir>, or fix its permissions") from None


# ---------------------------------------------------------------------------- checkpoints
def _corrupt(path: Path, err: BaseException | str) -> CheckpointError:
    reason = " ".join(str(err).split())[:160] or type(err).__name__
    previous = path.with_name(PREV)
    if path.name == LAST and previous.is_file():
        fix = (f"resume from the previous generation with `mv {previous} {path}` (it lacks the last "
               "checkpoint interval), or start over with resume=false")
    elif path.name == LAST:
        fix = "start over with resume=false (or remove the file)"
    else:
        fix = "load another checkpoint of the run (which=last), or remove the file"
    return CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason})", fix)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint loaded with ``weights_only=True``; :class:`CheckpointError` when it is corrupt
    or holds pickled objects (whose loading could run code: it is refused, not attempted)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"checkpoint {path} holds a pickled Python object ({found.group(1)}), not only tensors: loading "
                "it could run code, so it was refused",
                "load only checkpoints written by gancollapse (tensors and plain values), or start over with "
                "resume=false") from err
        raise _corrupt(path, err) from err
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError, OSError) as err:
        # a truncated zip makes torch's reader fail in several ways, OSError (EINVAL) among them
        raise _corrupt(path, err) from err
    if not isinstance(state, dict) or "state_dict" not in state:
        raise _corrupt(path, "no state_dict in it")
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe: atomic saves (``last.ckpt`` keeps ``last-prev.ckpt``) and
    ``weights_only`` loads. :meth:`preload` lets the caller validate a checkpoint before ``fit`` without
    reading it twice."""

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: dict[str, dict[str, Any]] = {}
        #: the G step each checkpoint path holds, as this process saved or loaded it (a failed save names it)
        self.g_steps: dict[str, int] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Atomic save; out of space, a :class:`DiskFullError` says where and which checkpoint is kept."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = path.with_name(PREV) if path.name == LAST else None
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f), keep_previous=previous)
        except (OSError, RuntimeError) as err:
            if is_disk_full(err):
                raise DiskFullError(path, self.g_steps.get(str(path)), err) from err
            raise
        self._remember(path, checkpoint)

    def _remember(self, path: Path, checkpoint: dict[str, Any]) -> None:
        step = checkpoint.get("gancollapse", {}).get("steps", {}).get("g")
        if step is not None:
            self.g_steps[str(path)] = int(step)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        cached = self._preloaded.pop(str(Path(path)), None)
        if cached is not None:
            return cached
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return load_checkpoint(path, map_location if not callable(map_location) else "cpu")

    def preload(self, path: str | Path) -> dict[str, Any]:
        """Load (and so validate) ``path`` now; the next :meth:`load_checkpoint` of it returns this dict."""
        state = load_checkpoint(path)
        self._preloaded[str(Path(path))] = state
        self._remember(Path(path), state)
        return state


# ---------------------------------------------------------------------------- configs of loaded runs
def check_targets(cfg: DictConfig | Mapping, source: str | Path, allowed: tuple[str, ...] = ALLOWED_TARGETS) -> None:
    """Refuse a config whose ``_target_`` values name code outside ``allowed`` package prefixes.

    Instantiating a config runs the code its ``_target_`` names (``os.system`` would do): a run received from
    someone else must only name the platform's own classes and the libraries it builds on.
    """
    def walk(node: Any, key: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, Mapping):
            for k, v in node.items():
                sub = f"{key}.{k}" if key else str(k)
                if k == "_target_":
                    yield sub, v
                else:
                    yield from walk(v, sub)
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                yield from walk(v, f"{key}[{i}]")

    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig | ListConfig) else cfg
    for key, target in walk(container, ""):
        if not isinstance(target, str) or not target.startswith(allowed):
            raise RunError(f"{source} sets {key}={target!r}, outside the packages a loaded run may name "
                           f"({', '.join(p.rstrip('.') for p in allowed)})",
                           "load only runs you trust, and then with gancollapse.load(path, trusted=True)")


# ---------------------------------------------------------------------------- locks
@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive, blocking ``flock`` on ``path`` across processes (DDP ranks on one machine writing the same
    cached file: one writes, the others wait and then find it done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- the run lock
class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` for the life of a run (the kernel releases it when the
    process dies, even by ``kill -9``). A second run on the directory fails at once, naming the holder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise RunError(f"run directory {self.run_dir} is in use by pid {pid}",
                           f"wait for that run to end (or stop it: kill -TERM {pid}), or choose another "
                           "hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text or "?"


def lock_holder(run_dir: str | Path) -> str | None:
    """The pid (as written) of the live process holding ``run_dir``'s lock, or None when it is free."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- exact resume
def rng_state() -> dict[str, Any]:
    """The torch, numpy, python and (when initialised) CUDA RNG states, as ``weights_only``-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def truncate_metrics(path: str | Path, max_step: int) -> int:
    """Drop the rows of a metrics CSV logged after ``max_step`` (a resumed run logs them again) and rows a
    kill cut short; returns how many were dropped. The file is rewritten atomically, only when needed."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        return 0
    header, col = rows[0], rows[0].index("step")
    keep = [header]
    for row in rows[1:]:
        try:
            ok = len(row) == len(header) and int(float(row[col])) <= max_step
        except ValueError:
            ok = False
        if ok:
            keep.append(row)
    dropped = len(rows) - len(keep)
    if dropped:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(keep)
        atomic_write_text(path, buf.getvalue())
    return dropped


# ---------------------------------------------------------------------------- one-line errors
def one_line(err: BaseException) -> str:
    """The error's message on one line (``what — fix`` for a :class:`RunError`)."""
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def one_line_errors(known: tuple[type[BaseException], ...] = (RunError, ValueError, FileNotFoundError)) -> Iterator[None]:
    """Print ``known`` errors as ``error: <message>`` on stderr and exit (code 1, or the RunError's), without a
    traceback; with ``HYDRA_FULL_ERROR=1`` they propagate with theirs."""
    try:
        yield
    except known as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(getattr(err, "code", 1) if isinstance(err, RunError) else 1)


# ---------------------------------------------------------------------------- run status
def divergence_message(streaks: dict[str, int], skips: dict[str, int], g_steps: Any, limit: int) -> str | None:
    """Why a run stops as diverged when some phase skipped ``limit`` or more optimizer steps in a row (their
    loss or gradient was non-finite); None while none has. ``streaks``/``skips``: per phase, in a row / in all."""
    worst = max(streaks, key=streaks.get, default=None)
    if worst is None or streaks[worst] < limit:
        return None
    return (f"the run diverged: {streaks[worst]} consecutive optimizer steps of phase '{worst}' had a non-finite "
            f"loss or gradient (at G step {g_steps}; nonfinite_skips={sum(skips.values())} in all)")
