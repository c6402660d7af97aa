"""Options and helpers shared by the commands: config resolution, console, errors."""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console

from centernet_core import config as config_lib

console = Console()
err_console = Console(stderr=True)

ExperimentOpt = typer.Option(None, "--experiment", "-e", help="Built-in experiment preset (see `centernet config --list`).")
ConfigOpt = typer.Option(None, "--config", "-c", help="Experiment YAML file (instead of --experiment).")
ProfileOpt = typer.Option(None, "--profile", "-p", help="Runtime profile: strategy, precision, batch (see `centernet profiles list`).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value, e.g. --set train.steps=1000 (repeatable).")


def flag_overrides(**flags) -> list[str]:
    """Command-line flags as config overrides: ``flag_overrides(**{"data.train": "x*"})`` ->
    ``["data.train=x*"]``. A flag left at None (not given) adds nothing; booleans become
    true / false, lists and tuples comma-separated values. They go through the same parsing,
    type checks and validation as ``--set`` items and come after them (a flag wins)."""
    items = []
    for key, value in flags.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        items.append(f"{key}={value}")
    return items


def resolve_config(experiment: Optional[str], config_file: Optional[str], profile: Optional[str],
                   overrides: Optional[List[str]], default_experiment: Optional[str] = None):
    """The CLI's one call into config resolution."""
    if not experiment and not config_file:
        experiment = default_experiment
    if not experiment and not config_file:
        raise config_lib.ConfigError("choose an experiment: --experiment NAME (one of "
                                     f"{', '.join(config_lib.experiment_names())}) or --config FILE.yaml")
    return config_lib.resolve(experiment, config_file, profile, overrides or [])
