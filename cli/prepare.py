"""`centernet prepare coco|voc|yolo|shapes|check`: write datasets as sharded TFRecords + metadata."""
from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
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
    _print_check(s, brief=True)


_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
_BRIEF_CLASSES = 20  # a prepare prints the class table up to this many classes


def _print_check(meta: dict, input_size: int = 512, max_objects: int = 128, brief: bool = False) -> list:
    """Render ``check.check_dataset`` for ``meta``; return its findings."""
    from centernet_core.data.check import check_dataset, load_stats

    r = check_dataset(meta, load_stats(meta), input_size=input_size, max_objects=max_objects)
    if not brief or len(r["classes"]) <= _BRIEF_CLASSES:
        table = Table("index", "id", "name", "boxes", "crowd", "images", "share", title="classes")
        for c in r["classes"]:
            table.add_row(str(c["index"]), str(c["id"]), c["name"], str(c["boxes"]), str(c["crowd"]),
                          str(c["images"]), f"{c['share']:.1%}", style="red" if not c["boxes"] else None)
        console.print(table)
    s = r["summary"]
    console.print(f"  boxes per image: mean {s['boxes_per_image_mean']:.1f}, max {s['boxes_per_image_max']} "
                  f"(data.max_objects {max_objects}); {s['negatives']} images without boxes", highlight=False)
    console.print(f"  object size in output cells at input {input_size}: "
                  + ", ".join(f"{label} {n}" for label, n in r["sizes"]), highlight=False)
    for level, text in r["findings"]:
        console.print(Text(f"  {level}: {text}", style=_LEVEL_STYLE[level]))
    if brief and len(r["classes"]) > _BRIEF_CLASSES:
        console.print("  per-class table: centernet prepare check PREFIX", highlight=False)
    return r["findings"]


def _write(images_dir: str, annotations, output: str, shards: int, workers: int, skip_bad: bool,
           source: Optional[dict] = None) -> None:
    """The one writer behind every format (a json path or a ``CocoIndex``): progress, summary, check."""
    from centernet_core.data.coco_writer import write_coco_tfrecords

    with _progress() as bar:
        task = bar.add_task("converting", total=None)
        summary = write_coco_tfrecords(images_dir, annotations, output, num_shards=shards, workers=workers,
                                       skip_bad=skip_bad, source=source,
                                       on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print_summary(output, summary)


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
    _write(images, annotations, output, shards, workers, skip_bad)


_OUTPUT_HELP = "Output prefix: PREFIX-0000i-of-0000N.tfrecord, PREFIX.meta.json."
_SHARDS_HELP = "Number of shards (0: one per 1024 images)."
_WORKERS_HELP = "Conversion processes, each writing whole shards (at most one per shard)."
_SKIP_HELP = "Leave out missing/undecodable images (listed in PREFIX.report.json) instead of failing."


@app.command("voc")
def voc(
    output: str = typer.Option(..., "--output", help=_OUTPUT_HELP),
    root: Optional[str] = typer.Option(None, "--root", help="VOC root with ImageSets/Main, Annotations, JPEGImages."),
    split: str = typer.Option("trainval", "--split", help="With --root: the ImageSets/Main list to convert."),
    images: Optional[str] = typer.Option(None, "--images", help="Instead of --root: the image folder ..."),
    annotations: Optional[str] = typer.Option(None, "--annotations", help="... and the folder of VOC .xml files."),
    classes: Optional[str] = typer.Option(
        None, "--classes",
        help="Comma-separated class names; their order gives ids 1..C (default: sorted names found)."),
    shards: int = typer.Option(0, "--shards", help=_SHARDS_HELP),
    workers: int = typer.Option(1, "--workers", help=_WORKERS_HELP),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_HELP),
):
    """Convert Pascal VOC XML annotations (1-based boxes; difficult objects kept as crowd).

    Example: centernet prepare voc --root VOCdevkit/VOC2007 --split trainval --output data/voc07/trainval

    Example: centernet prepare voc --images photos --annotations labels_xml --classes cat,dog --output data/pets
    """
    from centernet_core.data import voc as voc_lib
    from centernet_core.data.coco_json import validate_coco
    from centernet_core.errors import ConfigError

    if (root is not None and (images or annotations)) or (root is None and not (images and annotations)):
        raise ConfigError("pass either --root VOC_ROOT [--split NAME] or both --images DIR and --annotations DIR")
    if root is not None:
        images, files = voc_lib.voc_root_files(root, split)
        source = {"voc_root": root, "split": split}
    else:
        files = voc_lib.folder_files(annotations)
        source = {"voc_annotations": annotations, "images": images}
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    index = validate_coco(voc_lib.voc_to_coco(files, names), source="voc")
    _write(images, index, output, shards, workers, skip_bad, source)


@app.command("yolo")
def yolo(
    data: str = typer.Option(..., "--data", help="YOLO data.yaml (path, train/val/test, names)."),
    output: str = typer.Option(..., "--output", help=_OUTPUT_HELP),
    split: str = typer.Option("train", "--split", help="The data.yaml split to convert: train, val or test."),
    shards: int = typer.Option(0, "--shards", help=_SHARDS_HELP),
    workers: int = typer.Option(1, "--workers", help=_WORKERS_HELP),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_HELP),
):
    """Convert a YOLO dataset (normalised cx cy w h labels; images without labels are negatives).

    Example: centernet prepare yolo --data datasets/pets/data.yaml --split val --output data/pets/val
    """
    from centernet_core.data.coco_json import validate_coco
    from centernet_core.data.yolo import yolo_to_coco

    root, coco_dict = yolo_to_coco(data, split)
    index = validate_coco(coco_dict, source="yolo")
    _write(root, index, output, shards, workers, skip_bad, {"yolo_data": data, "split": split})


@app.command("check")
def check(
    prefix: str = typer.Argument(..., help="Dataset prefix, shard glob or PREFIX.meta.json."),
    input_size: int = typer.Option(512, "--input-size", help="model.input_size to judge object sizes at."),
    max_objects: int = typer.Option(128, "--max-objects", help="data.max_objects to judge boxes per image against."),
):
    """Class counts, boxes per image, object sizes in output cells, and what to change.

    Exits with status 1 when it finds an error (an image over --max-objects).

    Example: centernet prepare check data/coco/train --input-size 512 --max-objects 128
    """
    from centernet_core.data.metadata import load_metadata
    from centernet_core.errors import ConfigError, DataError

    if input_size < 32 or max_objects < 1:
        raise ConfigError("--input-size must be >= 32 and --max-objects >= 1")
    meta = load_metadata(prefix)
    c = meta["counts"]
    console.print(f"[bold]{prefix}[/]: {c['images']} images, {c['boxes']} boxes, {len(meta['categories'])} "
                  "categories", highlight=False)
    errors = [text for level, text in _print_check(meta, input_size, max_objects) if level == "error"]
    if errors:
        raise DataError(f"{prefix}: {len(errors)} error(s) above would stop training; apply the suggested setting "
                        "or fix the data")


@app.command("shapes")
def shapes(
    output: str = typer.Option(..., "--output", help="Output directory."),
    train: int = typer.Option(600, "--train", help="Training images."),
    val: int = typer.Option(100, "--val", help="Validation images."),
    size: str = typer.Option("128", "--size", help="Image size: S or WxH, e.g. 640x480."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same dataset."),
    workers: int = typer.Option(1, "--workers", help="Conversion processes."),
    shards: int = typer.Option(0, "--shards", help="Shards per split (0: automatic)."),
    keypoints: bool = typer.Option(False, "--keypoints", help="The keypoint set instead: kites with 4 named corners."),
):
    """Write the synthetic 3-class shapes set (COCO json + JPEGs + TFRecords).

    Example: centernet prepare shapes --output data/shapes --train 600 --val 100 --size 128
    Example: centernet prepare shapes --keypoints --output data/kites --train 800 --val 100
    """
    from centernet_core.data.shapes import make_shapes_dataset

    with _progress() as bar:
        tasks = {}

        def on_progress(split, done, total):
            if split not in tasks:
                tasks[split] = bar.add_task(f"shapes {split}", total=total)
            bar.update(tasks[split], completed=done)

        summaries = make_shapes_dataset(output, train=train, val=val, size=size, seed=seed, workers=workers,
                                        shards=shards, on_progress=on_progress, keypoints=keypoints)
    for split, s in summaries.items():
        _print_summary(f"{split} ({s['annotations_file']})", s)
