"""``centernet prepare coco``: COCO json + image directory -> sharded TFRecords + metadata.

    summary = write_coco_tfrecords(images_dir, annotations_file, output_prefix,
                                   num_shards=0, workers=1, skip_bad=False, on_progress=None)

Order of work, so a failure never leaves a dataset that looks complete:

1. The json is read and validated (``coco_json``): one DataError line, nothing written.
2. Images are converted in ``workers`` processes (``coco_example.convert_image``: Pillow
   and pure-Python protobuf, no TensorFlow in the workers) and written round-robin into
   shards under temporary names by ``tf.io.TFRecordWriter`` in this process (any storage
   path).
3. Missing or undecodable images: by default the temporary shards are deleted and one
   DataError lists the first few and the count. With ``skip_bad`` they are left out and
   listed with the reason in ``PREFIX.report.json``.
4. Shards are renamed into place, the report is written, and ``PREFIX.meta.json``
   (``metadata``) is written last.

Images without annotations are kept as negatives. The returned summary dict holds the
metadata counts plus ``report`` (path of the report file).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
from typing import Callable, Iterator

from centernet_core import storage
from centernet_core.data import metadata as meta_lib
from centernet_core.data.coco_example import ImageTask, convert_image
from centernet_core.data.coco_json import CocoIndex, load_coco
from centernet_core.errors import ConfigError, DataError
from centernet_core.tf_runtime import require_tensorflow

IMAGES_PER_AUTO_SHARD = 1024
_SHOW_BAD = 5


def _tasks(index: CocoIndex, images_dir: str) -> list[ImageTask]:
    names = tuple(c.name for c in index.categories)
    return [ImageTask(path=storage.join(images_dir, im.file_name), file_name=im.file_name, image_id=im.id,
                      json_hw=im.json_hw, annotations=tuple(im.annotations), category_names=names)
            for im in index.images]


def _results(tasks: list[ImageTask], workers: int) -> Iterator[tuple[str, object, dict]]:
    """Converted images in task order, from ``workers`` spawned processes (or inline for 1)."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(convert_image, tasks)
        return
    # spawn, not fork: this process has TensorFlow loaded (its threads do not survive a
    # fork), and the workers never import it.
    ctx = mp.get_context("spawn")
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    with ctx.Pool(processes=workers) as pool:
        yield from pool.imap(convert_image, tasks, chunksize=chunk)


def _bad_message(bad: list[dict], total: int) -> str:
    shown = "; ".join(f"{b['file_name']!r}: {b['reason']}" for b in bad[:_SHOW_BAD])
    more = f"; and {len(bad) - _SHOW_BAD} more" if len(bad) > _SHOW_BAD else ""
    return (f"{len(bad)} of {total} images are missing or undecodable: {shown}{more}. Nothing was written; "
            "fix the files or pass --skip-bad to leave them out (they are then listed in PREFIX.report.json)")


def write_coco_tfrecords(images_dir: str, annotations_file: str, output_prefix: str, num_shards: int = 0,
                         workers: int = 1, skip_bad: bool = False,
                         on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Convert a COCO detection dataset into sharded TFRecords and a metadata file.

    Args:
      images_dir: directory holding the json's ``file_name`` paths (any storage path).
      annotations_file: COCO instances json.
      output_prefix: shards go to ``PREFIX-0000i-of-0000N.tfrecord``, metadata to
        ``PREFIX.meta.json``, the report to ``PREFIX.report.json``.
      num_shards: N; 0 picks one shard per 1024 images (at least 1).
      workers: conversion processes.
      skip_bad: leave out missing/undecodable images instead of failing.
      on_progress: called as ``on_progress(done, total)`` after each image.

    Returns:
      The metadata dict (counts, shard paths, categories) plus ``report`` and ``metadata``
      paths.
    """
    if num_shards < 0 or workers < 1:
        raise ConfigError("--shards must be >= 0 (0: automatic) and --workers >= 1")
    index = load_coco(annotations_file)
    if not storage.isdir(images_dir):
        raise DataError(f"image directory not found: {images_dir}")
    tasks = _tasks(index, images_dir)
    num_shards = num_shards or max(1, math.ceil(len(tasks) / IMAGES_PER_AUTO_SHARD))
    tf = require_tensorflow()
    parent = storage.dirname(output_prefix)
    if parent:
        storage.makedirs(parent)
    finals = [meta_lib.shard_name(output_prefix, i, num_shards) for i in range(num_shards)]
    temps = [storage.temp_name(p) for p in finals]
    counts = {"images": 0, "negatives": 0, "boxes": 0, "crowd": 0, "clipped": 0, "dropped_empty": 0,
              "reencoded": 0, "size_mismatch": 0, "skipped_images": 0}
    bad, mismatches = [], []
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    try:
        for done, (task, (status, payload, stats)) in enumerate(zip(tasks, _results(tasks, workers)), 1):
            if status == "ok":
                writers[counts["images"] % num_shards].write(payload)
                counts["images"] += 1
                counts["negatives"] += int(stats["boxes"] == 0)
                for key in ("boxes", "crowd", "clipped", "dropped_empty", "reencoded", "size_mismatch"):
                    counts[key] += stats[key]
                if stats["size_mismatch"]:
                    mismatches.append({"file_name": task.file_name, "image_id": task.image_id,
                                       "json_hw": stats["json_hw"], "decoded_hw": stats["decoded_hw"]})
            else:
                bad.append({"file_name": task.file_name, "image_id": task.image_id, "reason": payload})
            if on_progress:
                on_progress(done, len(tasks))
        if bad and not skip_bad:
            raise DataError(_bad_message(bad, len(tasks)))
    except BaseException:  # bad images, a worker crash, Ctrl-C: leave nothing behind
        for w in writers:
            w.close()
        for t in temps:
            if storage.exists(t):
                storage.remove(t)
        raise
    for w in writers:
        w.close()
    for t, f in zip(temps, finals):
        storage.rename(t, f)
    counts["skipped_images"] = len(bad)
    report_path = output_prefix + ".report.json"
    storage.write_text_atomic(report_path, json.dumps(
        {"skipped_images": bad, "size_mismatches": mismatches, "counts": counts}, indent=1, ensure_ascii=False))
    meta = {"images": counts["images"], "boxes": counts["boxes"], "counts": counts, "shards": [storage.basename(f) for f in finals],
            "categories": [{"index": c.index, "id": c.id, "name": c.name} for c in index.categories],
            "source": {"annotations": annotations_file, "images": images_dir}}
    meta_path = meta_lib.write_metadata(output_prefix, meta)
    return {**meta, "shards": finals, "report": report_path, "metadata": meta_path}
