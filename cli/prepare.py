"""`centernet prepare coco|shapes`: write datasets as sharded TFRecords + metadata."""
from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from centernet_cli.common import console

app = typer.Typer(help="Write datasets as sharded TFRecords plus a metadata file.\n\n"
                       "Example: centernet prepare shapes --output data/shapes",
                  no_args_is_help=True)


class _RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} img/s" if task.speed else "- img/s", style="progress.data.speed")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def _print_summary(name: str, s: dict) -> None:
    c = s["counts"]
    console.print(f"[bold]{name}[/]: {c['images']} images ({c['negatives']} without boxes), {c['boxes']} boxes "
                  f"({c['crowd']} crowd), {len(s['shards'])} shards, {len(s['categories'])} categories", highlight=False)
    notes = [f"{c['clipped']} boxes clipped to the image", f"{c['dropped_empty']} empty boxes dropped",
             f"{c['reencoded']} images re-encoded as JPEG", f"{c['size_mismatch']} json sizes differ from the image",
             f"{c['skipped_images']} bad images skipped"]
    shown = [n for n in notes if not n.startswith("0 ")]
    if shown:
        console.print("  " + "; ".join(shown) + f" (details: {s['report']})", highlight=False)
    console.print(f"  metadata: {s['metadata']}", highlight=False)


@app.command("coco")
def coco(
    images: str = typer.Option(..., "--images", help="Directory with the images named in the json (any storage path)."),
    annotations: str = typer.Option(..., "--annotations", help="COCO instances json."),
    output: str = typer.Option(..., "--output", help="Output prefix: PREFIX-0000i-of-0000N.tfrecord, PREFIX.meta.json."),
    shards: int = typer.Option(0, "--shards", help="Number of shards (0: one per 1024 images)."),
    workers: int = typer.Option(1, "--workers", help="Conversion processes, each writing whole shards (at most one per shard)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out missing/undecodable images (listed in PREFIX.report.json) instead of failing."),
):
    """Convert a COCO detection dataset.

    Example: centernet prepare coco --images coco/val2017 --annotations coco/annotations/instances_val2017.json --output data/coco-val --shards 8 --workers 2
    """
    from centernet_core.data.coco_writer import write_coco_tfrecords

    with _progress() as bar:
        task = bar.add_task("converting", total=None)
        summary = write_coco_tfrecords(images, annotations, output, num_shards=shards, workers=workers,
                                       skip_bad=skip_bad,
                                       on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print_summary(output, summary)


@app.command("shapes")
def shapes(
    output: str = typer.Option(..., "--output", help="Output directory."),
    train: int = typer.Option(600, "--train", help="Training images."),
    val: int = typer.Option(100, "--val", help="Validation images."),
    size: str = typer.Option("128", "--size", help="Image size: S or WxH, e.g. 640x480."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same dataset."),
    workers: int = typer.Option(1, "--workers", help="Conversion processes."),
    shards: int = typer.Option(0, "--shards", help="Shards per split (0: automatic)."),
):
    """Write the synthetic 3-class shapes set (COCO json + JPEGs + TFRecords).

    Example: centernet prepare shapes --output data/shapes --train 600 --val 100 --size 128
    """
    from centernet_core.data.shapes import make_shapes_dataset

    with _progress() as bar:
        tasks = {}

        def on_progress(split, done, total):
            if split not in tasks:
                tasks[split] = bar.add_task(f"shapes {split}", total=total)
            bar.update(tasks[split], completed=done)

        summaries = make_shapes_dataset(output, train=train, val=val, size=size, seed=seed, workers=workers,
                                        shards=shards, on_progress=on_progress)
    for split, s in summaries.items():
        _print_summary(f"{split} ({s['annotations_file']})", s)
