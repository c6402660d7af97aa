"""`centernet profiles list|show`: the runtime profiles shipped with the toolkit."""
from __future__ import annotations

import typer
import yaml
from rich.table import Table

from centernet_core import config as config_lib
from centernet_cli.common import console

app = typer.Typer(help="Runtime profiles: strategy, precision, global batch, steps per loop.\n\nExample: centernet profiles show tpu-v3-8",
                  no_args_is_help=True)


@app.command("list")
def list_profiles():
    """List the profiles.  Example: centernet profiles list"""
    table = Table(title="runtime profiles")
    for col in ("name", "strategy", "precision", "global batch", "steps/loop"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", ratio=1)
    for name in config_lib.profile_names():
        p = config_lib.load_profile_yaml(name)
        r = config_lib.from_dict({"runtime": p.get("runtime") or {}}).runtime
        table.add_row(name, r.strategy, r.precision, str(r.global_batch_size), str(r.steps_per_loop),
                      p.get("description", ""))
    console.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="Profile name, e.g. tpu-v3-8")):
    """Print one profile as YAML.  Example: centernet profiles show tpu-v3-8"""
    p = config_lib.load_profile_yaml(name)
    config_lib.from_dict({"runtime": p.get("runtime") or {}})  # type-check what it says
    typer.echo(yaml.safe_dump(p, sort_keys=False, width=1000).rstrip())
