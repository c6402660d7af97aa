"""`centernet info`: parameters, output shapes and FLOPs of an experiment's model."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from centernet_cli.common import ConfigOpt, ExperimentOpt, ProfileOpt, SetOpt, console, resolve_config
from centernet_core.tf_setup import require_tensorflow


def info(
    experiment: Optional[str] = ExperimentOpt,
    config_file: Optional[str] = ConfigOpt,
    profile: Optional[str] = ProfileOpt,
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (params_total, params_trainable, flops, ...)."),
):
    """Build the model of an experiment and print its size and cost at the configured input size.

    FLOPs are 2 x multiply-accumulates of the convolutions for one image, all stacks' heads included.

    Example: centernet info --experiment hourglass104-coco --set model.num_classes=90 --json
    """
    cfg = resolve_config(experiment, config_file, profile, set_)
    require_tensorflow()
    from centernet_core.modeling.model import build_model
    from centernet_core.modeling.summary import describe_model

    report = describe_model(build_model(cfg), cfg.model.input_size)
    report = {"experiment": cfg.name, "backbone": cfg.model.backbone, "num_classes": cfg.model.num_classes, **report}
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"[bold]{cfg.name}[/]: {cfg.model.backbone}, {cfg.model.num_classes} classes, "
                  f"input {cfg.model.input_size}x{cfg.model.input_size}", highlight=False)
    console.print(f"parameters: {report['params_total']:,} total, {report['params_trainable']:,} trainable, "
                  f"{report['params_non_trainable']:,} non-trainable (batch norm statistics)", highlight=False)
    console.print(f"FLOPs per image: {report['flops'] / 1e9:,.3g} G (2 x conv multiply-accumulates)", highlight=False)
    for name, shape in report["outputs"].items():
        console.print(f"  {name:18s} {shape}", highlight=False)
