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
from PIL import Image, ImageDraw
from tensorflow.core.framework import summary_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from centernet_core import draw, storage
from centernet_core.data.augment import MEAN_BGR, STD_BGR
from centernet_core.decode import decode
from centernet_core.detect import head_maps

PICTURE_SCORE = 0.3  # predictions drawn on the TensorBoard pictures
LOSS_KEYS = ("total", "heatmap", "size", "offset")


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
    return (f"loss {losses['total']:.3f} (heatmap {losses['heatmap']:.3f} size {losses['size']:.3f} "
            f"offset {losses['offset']:.3f})")


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
                self._writers[name] = tf.summary.create_file_writer(storage.join(model_dir, "logs", name))

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
            for k in LOSS_KEYS:
                write_scalar(f"loss/{k}", losses[k], step)
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
            write_scalar("coco/minutes", minutes, step)
            if pictures is not None and len(pictures):
                write_images("detections", pictures, step)
            self._writers["eval"].flush()


def to_rgb_uint8(images) -> np.ndarray:
    """Pipeline images (normalised B, G, R ``[B, S, S, 3]``) back to RGB uint8."""
    bgr = np.asarray(images, np.float32) * np.asarray(STD_BGR, np.float32) + np.asarray(MEAN_BGR, np.float32)
    return np.clip(bgr[..., ::-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _rate(images_per_sec: float | None) -> str:
    return "tracing" if images_per_sec is None else f"{images_per_sec:.1f} img/s"


def detection_pictures(model, features: dict, class_names: list[str], max_images: int = 3) -> np.ndarray:
    """Up to ``max_images`` eval-batch images with true (white) and predicted boxes.

    ``features`` is one eval batch of the pipeline (image, scale, gt_boxes_yxyx_abs,
    gt_count); drawn in input pixels. Returns uint8 ``[N, S, S, 3]``.
    """
    images = features["image"][:max_images]
    heat, size, offset = head_maps(model, images)
    det = {k: v.numpy() for k, v in decode(heat, size, offset, max_detections=100).items()}
    scale = features["scale"].numpy()[:max_images]
    gt = features["gt_boxes_yxyx_abs"].numpy()[:max_images] * scale[:, None, None]  # [N, K, 4] input px
    out = []
    for i, rgb in enumerate(to_rgb_uint8(images.numpy())):
        picture = Image.fromarray(rgb)
        pen = ImageDraw.Draw(picture)
        for ymin, xmin, ymax, xmax in gt[i, : int(features["gt_count"][i])]:
            pen.rectangle([xmin, ymin, xmax, ymax], outline=(255, 255, 255), width=1)
        keep = det["scores"][i] >= PICTURE_SCORE
        classes = det["classes"][i][keep]
        picture = draw.draw_detections(picture, det["boxes_yxyx_abs"][i][keep], det["scores"][i][keep], classes,
                                       [class_names[int(c)] if int(c) < len(class_names) else str(c)
                                        for c in classes])
        out.append(np.asarray(picture))
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def evaluate_during_training(model, cfg, val_pattern: str, meta: dict, num_pictures: int = 3):
    """COCO metrics of ``model`` on ``val_pattern`` (``evaluate.evaluate_model``) and pictures.

    Returns ``(metrics, pictures)``; pictures are the first ``num_pictures`` validation
    images with true and predicted boxes, uint8 ``[N, S, S, 3]``.
    """
    from centernet_core.data.metadata import category_names
    from centernet_core.data.pipeline import build_dataset
    from centernet_core.evaluate import evaluate_model

    metrics = evaluate_model(model, cfg, val_pattern, meta["categories"])
    features, _ = next(iter(build_dataset(val_pattern, cfg, False, batch_size=num_pictures)))
    return metrics, detection_pictures(model, features, category_names(meta), num_pictures)
