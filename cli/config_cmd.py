"""`centernet config`: print the resolved experiment config (presets, profile, overrides)."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from centernet_core import config as config_lib
from centernet_cli.common import ConfigOpt, ExperimentOpt, ProfileOpt, SetOpt, resolve_config


def config(
    experiment: Optional[str] = ExperimentOpt,
    config_file: Optional[str] = ConfigOpt,
    profile: Optional[str] = ProfileOpt,
    set_: Optional[List[str]] = SetOpt,
    list_: bool = typer.Option(False, "--list", help="List the built-in experiments."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
):
    """Resolve and print an experiment config.

    Example: centernet config --experiment hourglass104-coco --profile gpu-x8 --set train.steps=1000
    """
    if list_:
        for name in config_lib.experiment_names():
            typer.echo(name)
        return
    cfg = resolve_config(experiment, config_file, profile, set_)
    if as_json:
        print(json.dumps(config_lib.to_dict(cfg), indent=2))
    else:
        typer.echo(config_lib.dump_yaml(cfg).rstrip())
