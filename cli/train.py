"""`centernet train`: resolve the config, call ``centernet_core.training.loop.train``, print the outcome."""
from __future__ import annotations

from typing import List, Optional

import typer

from centernet_cli.common import (ConfigOpt, ExperimentOpt, ProfileOpt, SetOpt, console, err_console, flag_overrides,
                                  resolve_config)

IMPORT_EXTREMENET = ("centernet import --from centernet-pth ExtremeNet_250000.pth --backbone-only "
                     "--output runs/extremenet-backbone")


def init_warning(cfg, init_checkpoint: Optional[str]) -> Optional[str]:
    """The warning for a recipe that expects an initialisation (``train.init``) started without one."""
    if cfg.train.init != "extremenet" or init_checkpoint:
        return None
    return ("warning: this recipe (train.init=extremenet) fine-tunes from the ExtremeNet Hourglass-104 backbone, "
            "as both references do; from random weights it is a different recipe and will not reach the "
            "published accuracy. Import the backbone once with\n  " + IMPORT_EXTREMENET +
            "\nand pass --init-checkpoint runs/extremenet-backbone (a resumed run already has its weights).")


def profile_hint(cfg, profile: Optional[str]) -> Optional[str]:
    """A one-line hint when no profile was named, training would run float32, and this CPU
    computes bfloat16 natively: the cpu-bf16 profile trains convolution-heavy models up to about
    twice as fast there."""
    from centernet_core.inference.precision import cpu_has_bf16

    if profile or cfg.runtime.precision != "float32" or not cpu_has_bf16():
        return None
    return ("hint: this CPU computes bfloat16 natively; -p cpu-bf16 (mixed_bfloat16) trains up to about twice as "
            "fast as the float32 default (docs/benchmarks.md). Without a GPU, add it to this command.")


def train(
    experiment: Optional[str] = ExperimentOpt,
    config_file: Optional[str] = ConfigOpt,
    profile: Optional[str] = ProfileOpt,
    model_dir: str = typer.Option(..., "--model-dir", "-m", help="Run directory: checkpoints, config, logs. "
                                  "Re-running the same command resumes from its newest checkpoint."),
    data: Optional[str] = typer.Option(None, "--data", help="Training TFRecord pattern (overrides data.train)."),
    val_data: Optional[str] = typer.Option(None, "--val-data",
                                           help="Validation TFRecord pattern (overrides data.val)."),
    set_: Optional[List[str]] = SetOpt,
    init_checkpoint: Optional[str] = typer.Option(
        None, "--init-checkpoint", help="Start a new run from another run directory or checkpoint (the backbone "
        "only when the class count differs)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="COCO-evaluate on the validation data every "
                                             "N steps and keep the best checkpoint in MODEL_DIR/best (0: never)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Log lines only, no progress bar."),
):
    """Train a CenterNet model; SIGTERM / Ctrl-C saves a checkpoint and stops, the same command resumes.

    Example: centernet train --experiment shapes-tiny --profile cpu --model-dir runs/shapes --data 'data/shapes/train-*.tfrecord' --val-data 'data/shapes/val-*.tfrecord' --eval-every 500
    """
    flags = flag_overrides(**{"data.train": data, "data.val": val_data, "train.eval_every": eval_every})
    cfg = resolve_config(experiment, config_file, profile, (set_ or []) + flags)
    for note in (init_warning(cfg, init_checkpoint), profile_hint(cfg, profile)):
        if note:
            err_console.print(note, highlight=False, markup=False)
    from centernet_core.training.loop import train as run_training

    result = run_training(cfg, model_dir, init_checkpoint=init_checkpoint, show_progress=not no_progress,
                          console=console)
    if result.status == "interrupted":
        console.print(f"stopped by {result.signal} at step {result.step}; checkpoint saved in {model_dir}",
                      highlight=False)
        return
    summary = f"finished at step {result.step}"
    if result.losses:
        summary += f", loss {result.losses['total']:.4f}"
    if result.eval:
        summary += f", AP {result.eval['AP']:.4f}, AP50 {result.eval['AP50']:.4f}"
    console.print(f"{summary}; run directory: {model_dir}", highlight=False)
