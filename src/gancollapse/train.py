"""Entry point: ``python -m gancollapse.train [overrides]`` (Hydra main, ``conf/train.yaml``).

Rerunning with the same run directory (``hydra.run.dir=<dir>``) resumes from ``checkpoints/last.ckpt`` where
the run stopped, bit-identically on one CPU; what a run survives (kills, signals, bad input) and what it
does not is docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from gancollapse import runner
from gancollapse.aggregate import objective_value
from gancollapse.callbacks import (
    StopTraining,
)
from gancollapse.paths import CONF_DIR
from gancollapse.progress import closing_lines
from gancollapse.runio import (
    RunError,
    atomic_write_text,
    check_writable,
    one_line,
    one_line_errors,
)
from gancollapse.runner import EXIT_DIVERGED, is_global_zero_process
from gancollapse.schema import closest

log = logging.getLogger("gancollapse")
#: the run's record in <run dir>/train.log only (conf/train.yaml's hydra.job_logging): its start and the closing
#: printout, which stdout already shows
record = logging.getLogger("gancollapse.run")



def resolve_default_choice(group: str, choice: str | None) -> str | None:
    """``model=default/<dataset>`` is an alias file; report the option it selects (``dcgan32``)."""
    if not choice or not choice.startswith("default/"):
        return choice
    alias = Path(CONF_DIR) / group / f"{choice}.yaml"
    for entry in OmegaConf.load(alias).get("defaults", []) if alias.is_file() else []:
        if isinstance(entry, str) and entry.startswith(f"/{group}/"):
            return entry[len(group) + 2 :].split("@")[0]
    return choice


def run(cfg: DictConfig, run_dir: Path | str, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (:func:`gancollapse.runner.run`): one run, or ``ensemble=K`` seeds in one
    process (:func:`gancollapse.ensemble.run_ensemble`); returns the summary dict."""
    from gancollapse.ensemble import run_ensemble

    return runner.run(cfg, run_dir, on_start, ensemble=run_ensemble)


def check_output_dir_args(argv: list[str]) -> None:
    """Create and probe the ``hydra.run.dir`` / ``hydra.sweep.dir`` given on the command line, so an unwritable
    one is a one-line error (Hydra would fail creating it with a traceback, before any of our code runs)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for arg in argv:
        name, _, value = arg.lstrip("+").partition("=")
        if name == key and value and "${" not in value:
            check_writable(Path(value))


#: Hydra command-line flags after which no run is composed (help, config printing, shell completion)
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
               "--resolve", "--version", "--package", "-p")


def preflight(argv: list[str]) -> None:
    """Compose the run config as Hydra's main will (for a sweep: its first combination) and turn a composition
    error into one line naming the override (RunError): Hydra's own report spans several lines."""
    if any(a.split("=", 1)[0] in _INFO_FLAGS for a in argv) or any(a.startswith("--config") for a in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise RunError(f"cannot parse the overrides ({one_line(err)})", "write them as key=value (a sweep as "
                       "key=a,b with -m)") from None
    def value_line(o: Any, value: str) -> str:
        return f"{o.get_key_element()}={value}"

    first = [o.input_line if not o.is_sweep_override() else value_line(o, next(iter(o.sweep_string_iterator())))
             for o in parsed]
    # a sweep: every value of every swept key once, the other keys at their first value
    trials = [first] + [[*first[:i], value_line(o, v), *first[i + 1:]] for i, o in enumerate(parsed)
                        if o.is_sweep_override() for v in list(o.sweep_string_iterator())[1:]]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for overrides in trials:
            try:
                compose("train", overrides=overrides)
            except HydraException as err:
                raise composition_error(err, overrides) from None


def composition_error(err: Exception, overrides: list[str]) -> RunError:
    """One line for Hydra's composition errors: a bad value (``n_critic=abc``), an unknown key (``max_g_step=10``),
    an unknown option (``loss=foo``)."""
    from hydra import compose
    from hydra.errors import HydraException

    text = " ".join(str(err).split())
    cause = err.__cause__
    cause_line = str(cause).splitlines()[0] if cause is not None and str(cause) else ""
    missing = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", str(err))
    if missing:
        group, option = missing.groups()
        group = next((o.split("=", 1)[0].lstrip("+~") for o in overrides
                      if o.split("=", 1)[0].lstrip("+~") in (group, group.split("/", 1)[0])), group)
        option = option if group == missing.group(1) else f"{missing.group(1)[len(group) + 1:]}/{option}"
        folder = Path(CONF_DIR) / group
        options = sorted(str(p.relative_to(folder))[:-5] for p in folder.rglob("*.yaml")) if folder.is_dir() else []
        return RunError(f"{group}={option}: no such option{closest(option, options)}",
                        f"choose one of {', '.join(options)} (conf/{group}/)" if options else f"see conf/{group}/")
    merging = re.match(r"Error merging override (\S+)", text)
    if merging:
        key = merging.group(1).split("=", 1)[0]
        return RunError(f"{merging.group(1)}: {cause_line or text}", f"give {key} a value of its type (conf/train.yaml "
                        "and the component's docstring document each key)")
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        parent, _, name = key.rpartition(".")
        try:
            rest = [o for o in overrides if o != given]
            node = compose("train", overrides=rest)
            node = OmegaConf.select(node, parent) if parent else node
            keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
        except HydraException:
            keys = []
        where = parent or "the run config"
        return RunError(f"{given}: {where} has no key {name}{closest(name, keys)}",
                        f"fix the key, or add a new one with +{given} where the component takes it")
    return RunError(text, "fix the override (HYDRA_FULL_ERROR=1 shows Hydra's full report)")


def main() -> float | None:
    """``python -m gancollapse.train [overrides]``: checks the output directory and composes the config once, so
    a bad override is one line naming it, then runs :func:`hydra_main`."""
    with one_line_errors():
        preflight(sys.argv[1:])  # first: a refused config creates no directory
        check_output_dir_args(sys.argv[1:])
    return hydra_main()


def write_hydra_record(run_dir: Path, cfg: DictConfig, hc: DictConfig) -> None:
    """``<run>/.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them (conf/train.yaml sets
    ``hydra.output_subdir: null`` so Hydra does not, before our start checks): written only once a start is
    accepted, so a refused resume or a second process refused by the run lock leaves the run's record as it was."""
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(out / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    atomic_write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    # A job started in the background inherits SIGINT=ignored; Ctrl-C / kill -INT must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {k: resolve_default_choice(k, v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    run_dir = Path(hc.runtime.output_dir)

    def on_start() -> None:  # the start checks passed: from here on the run's files are its own
        if is_global_zero_process():
            write_hydra_record(run_dir, cfg, hc)
            record.info("run %s: %s", run_dir, " ".join(hc.overrides.task) or "(no overrides)")

    with one_line_errors():
        try:
            summary = run(cfg, run_dir, on_start=on_start)
        except StopTraining as stop:  # a stop that saved nothing: the checkpoint on disk is the newest state
            print(f"{stop.message[:1].upper()}{stop.message[1:]}. Rerun with hydra.run.dir={run_dir} to resume.",
                  file=sys.stderr, flush=True)
            sys.exit(stop.exit_code)
        except (RunError, ValueError, FileNotFoundError):
            with contextlib.suppress(OSError):  # a refused fresh start leaves no directory behind (Hydra made it)
                run_dir.rmdir()
            raise
    status = summary.get("status", "finished")
    ensemble = "members" in summary
    if summary:
        if ensemble:
            from gancollapse.ensemble import closing_lines as ensemble_lines

            lines = ensemble_lines(run_dir, summary)
        else:
            lines = closing_lines(run_dir, summary)
        print("\n" + "\n".join(lines), flush=True)
        record.info("\n".join(lines))
    maximize = "max" in str(hc.sweeper.get("direction", "minimize"))
    if status == "diverged":
        print(f"error: {summary.get('reason', 'the run diverged')} — lower the learning rate (optim.*.lr) or add a "
              "regularizer, and start a new run (another hydra.run.dir, or resume=false); last.ckpt holds the last "
              "finite weights", file=sys.stderr, flush=True)
        if hc.mode != RunMode.MULTIRUN:
            sys.exit(EXIT_DIVERGED)
        return -math.inf if maximize else math.inf  # a sweep goes on; its tuner ranks this trial last
    if status.startswith("interrupted"):
        code = 130 if status.endswith("SIGINT") else 143
        reason = str(summary.get("reason", status))
        print(f"{reason[:1].upper()}{reason[1:]} after G step {summary.get('g_steps')}; last.ckpt holds the "
              f"{'state at the stop' if summary.get('saved', True) else 'last periodic save'}. Rerun with "
              f"hydra.run.dir={run_dir} to resume.", file=sys.stderr, flush=True)
        sys.exit(code)
    if not summary:  # DDP ranks other than 0 have none; the job's return value is rank 0's
        return None
    # What tuning sweepers (hydra/sweeper=optuna) optimise; a NaN metric is the worst value for their direction.
    if ensemble:
        from gancollapse.ensemble import ensemble_objective

        return ensemble_objective(summary, cfg.get("objective"), OmegaConf.select(cfg, "evaluator.monitor"), maximize)
    return objective_value(summary, cfg.get("objective"), OmegaConf.select(cfg, "evaluator.monitor"), maximize)


def cli() -> None:
    """The ``gancollapse-train`` console script: :func:`main` returns a sweep objective, which a console script
    would pass to ``sys.exit`` (a float there exits 1); the exit status comes from the run's own ``sys.exit``."""
    main()


if __name__ == "__main__":
    main()
