"""What training shows and records: a rich progress bar, log lines, TensorBoard.

TensorBoard events go to ``model_dir/logs/train`` (``loss/{total,heatmap,size,offset}``,
``learning_rate``, ``images_per_second``) and ``model_dir/logs/eval`` (the COCO numbers
and ``detections``: a few validation images with true boxes in white and predicted boxes
in class colours). Only the chief process of a multi-worker job writes or prints.
Events are written with ``tf.summary.write`` and the plugin metadata TensorBoard reads,
so recording needs no ``tensorboard`` package (only viewing does).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from centernet_core import run_dir



def _metadata(plugin: str) -> bytes:
    data = summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    return summary_pb2.SummaryMetadata(plugin_data=data).SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """One TensorBoard scalar into the default summary writer."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars"))


def write_images(tag: str, images: np.ndarray, step: int) -> None:
    """uint8 ``[N, H, W, 3]`` as one TensorBoard image summary (PNG-encoded, N images)."""
    h, w = images.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(w)), tf.constant(str(h))] + encoded)
    tf.summary.write(tag, tensor, step=step, metadata=_metadata("images"))


def format_losses(losses: dict) -> str:
    """``loss 1.234 (heatmap 1.000 size 2.000 offset 0.300)``: the total, then each term."""
    terms = " ".join(f"{k} {v:.3f}" for k, v in losses.items() if k != "total")
    return f"loss {losses['total']:.3f} ({terms})"


class TrainReporter:
    """Progress bar, console lines and TensorBoard scalars / images of one training run.

    Use as a context manager. ``active`` False (non-chief workers) turns everything off.
    """

    def __init__(self, model_dir: str, total_steps: int, start_step: int, active: bool = True,
                 show_progress: bool = True, console: Console | None = None):
        self.active, self.total = active, total_steps
        self.console = console or Console()
        self._progress = None
        if active and show_progress:
            self._progress = Progress(
                TextColumn("[bold]train[/]"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, info="")
        self._writers = {}
        if active:
            for name in ("train", "eval"):
                self._writers[name] = tf.summary.create_file_writer(run_dir.log_dir(model_dir, name))

    def __enter__(self):
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress:
            self._progress.stop()
        for w in self._writers.values():
            w.flush()

    def print(self, text: str) -> None:
        if self.active:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def progress(self, step: int, losses: dict, lr: float, images_per_sec: float | None) -> None:
        """Move the bar to ``step`` with the latest losses, learning rate and throughput
        (``None`` while only the first, tracing, call has run)."""
        if self._progress:
            info = f"loss {losses['total']:.3f}  lr {lr:.2e}  {_rate(images_per_sec)}"
            self._progress.update(self._task, completed=step, info=info)

    def log(self, step: int, losses: dict, lr: float, images_per_sec: float | None) -> None:
        """A console line and the TensorBoard scalars for the steps since the last log."""
        if not self.active:
            return
        self.print(f"step {step}/{self.total}  {format_losses(losses)}  lr {lr:.3e}  {_rate(images_per_sec)}")
        with self._writers["train"].as_default():
            for k, v in losses.items():
                write_scalar(f"loss/{k}", v, step)
            write_scalar("learning_rate", lr, step)
            if images_per_sec is not None:
                write_scalar("images_per_second", images_per_sec, step)

    def log_eval(self, step: int, metrics: dict, minutes: float, pictures: np.ndarray | None = None) -> None:
        """Eval numbers (and pictures ``[N, S, S, 3]`` uint8) at ``step``."""
        if not self.active:
            return
        shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("AP", "AP50", "AP75") if k in metrics)
        self.print(f"eval at step {step} ({minutes:.1f} min): {shown}")
        with self._writers["eval"].as_default():
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    write_scalar(f"coco/{k}", v, step)
            for name, ap in metrics.get("per_class", {}).items():  # the numbers `eval --report` tabulates
                if ap == ap:  # NaN: no ground truth of that class
                    write_scalar(f"coco_per_class/{name}", ap, step)
            write_scalar("coco/minutes", minutes, step)
            if pictures is not None and len(pictures):
                write_images("detections", pictures, step)
            self._writers["eval"].flush()


def _rate(images_per_sec: float | None) -> str:
    return "tracing" if images_per_sec is None else f"{images_per_sec:.1f} img/s"
