"""`centernet import`: turn another system's checkpoint into a run directory of this toolkit."""
from __future__ import annotations

from typing import List, Optional

import typer

from centernet_cli.common import ConfigOpt, ExperimentOpt, SetOpt, console, resolve_config
from centernet_core.errors import ConfigError
from centernet_core.tf_setup import require_tensorflow

SOURCES = ("centernet-pth", "torchvision")
DEFAULT_EXPERIMENT = {"centernet-pth": "hourglass104-coco", "torchvision": "resnet18-custom"}


def import_(
    checkpoint: str = typer.Argument(..., help="The checkpoint file, e.g. ctdet_coco_hg.pth (local path or gs://)."),
    source: str = typer.Option(..., "--from", help=f"Checkpoint kind: {', '.join(SOURCES)}: the original PyTorch "
                               "CenterNet / CornerNet / ExtremeNet Hourglass (default -e hourglass104-coco), or "
                               "torchvision's ImageNet ResNet-18 (default -e resnet18-custom); read without PyTorch."),
    output: str = typer.Option(..., "--output", "-o",
                               help="New run directory to write (checkpoint + config + categories)."),
    experiment: Optional[str] = ExperimentOpt,
    config_file: Optional[str] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    backbone_only: bool = typer.Option(False, "--backbone-only", help="Import only the backbone (pre, kps, cnvs, "
                                       "inters*): for CornerNet / ExtremeNet checkpoints, whose heads differ."),
    categories: Optional[str] = typer.Option(None, "--categories",
                                             help="Prepared dataset (PREFIX or PREFIX.meta.json) whose category "
                                             "table the checkpoint was trained with; default COCO's 80."),
):
    """Import a PyTorch checkpoint (original CenterNet, or torchvision's ResNet-18) into a run directory.

    The pickle is read by a restricted reader that only rebuilds tensors: a file that asks
    for any other Python object is refused and nothing is written. Every tensor must find
    its place in the model (and every model weight a tensor), or the import fails listing
    the keys. The run directory works with eval, export and predict as it is.

    Example: centernet import ctdet_coco_hg.pth --from centernet-pth --output runs/hg104-original

    Example: centernet import resnet18-f37072fd.pth --from torchvision --output runs/resnet18-imagenet
    """
    if source not in SOURCES:
        raise ConfigError(f"--from {source!r} is not supported; valid: {', '.join(SOURCES)}")
    cfg = resolve_config(experiment, config_file, None, set_, default_experiment=DEFAULT_EXPERIMENT[source])
    require_tensorflow()
    if source == "torchvision":
        if categories:
            raise ConfigError("--categories belongs to --from centernet-pth: a torchvision import has no detection "
                              "classes (they come from the data trained on next)")
        _import_torchvision(checkpoint, output, cfg)
        return
    from centernet_core.importers.hourglass_pth import import_centernet_pth

    summary = import_centernet_pth(checkpoint, output, cfg, backbone_only=backbone_only, categories_from=categories)
    what = "backbone" if backbone_only else "model"
    epoch = f" (epoch {summary['epoch']})" if summary["epoch"] is not None else ""
    console.print(f"imported {summary['tensors']} tensors, {summary['parameters']:,} values into the {what} of "
                  f"{cfg.name}{epoch}", highlight=False)
    if summary["ignored"]:
        console.print(f"ignored {summary['ignored']} non-backbone tensors (--backbone-only)", highlight=False)
    console.print(f"run directory: {output}  (checkpoint {summary['checkpoint']})", highlight=False)
    if backbone_only:
        console.print(f"next: centernet train --experiment {cfg.name} --init-checkpoint {output} --model-dir RUN "
                      "--data 'TRAIN-*.tfrecord'", highlight=False)
    else:
        data = "" if cfg.data.val else " --data 'data/coco/val2017-*.tfrecord'"
        console.print(f"next: centernet eval --ckpt {output}{data} --flip", highlight=False)


def _import_torchvision(checkpoint: str, output: str, cfg) -> None:
    from centernet_core.importers.torchvision_pth import import_torchvision_pth

    summary = import_torchvision_pth(checkpoint, output, cfg)
    console.print(f"imported {summary['tensors']} tensors, {summary['parameters']:,} values into the ResNet-18 "
                  f"trunk of {cfg.name} (ImageNet classifier ignored)", highlight=False)
    console.print(f"run directory: {output}  (checkpoint {summary['checkpoint']})", highlight=False)
    console.print(f"next: centernet train --experiment {cfg.name} --init-checkpoint {output} --model-dir RUN "
                  "--data 'TRAIN-*.tfrecord' --val-data 'VAL-*.tfrecord'", highlight=False)
