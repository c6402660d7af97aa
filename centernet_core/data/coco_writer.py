"""``centernet prepare coco``: COCO json + image directory -> sharded TFRecords + metadata.

    summary = write_coco_tfrecords(images_dir, annotations, output_prefix,
                                   num_shards=0, workers=1, skip_bad=False, on_progress=None)

``annotations`` is a COCO json path or an in-memory ``CocoIndex`` (``coco_json.validate_coco``
of a COCO-format dict): ``prepare voc`` and ``prepare yolo`` build one and come through here.

Order of work, so a failure never leaves a dataset that looks complete:

1. The json is read and validated (``coco_json``): one DataError line, nothing written.
2. Image i goes to shard i mod N, so shard contents depend only on the inputs. Each
   shard is one job: a worker process converts its images in order
   (``coco_example.convert_image``: full Pillow decode, pure-Python protobuf), takes each
   record's box statistics (``check.objects_of_example``) and writes them under a
   temporary name (``tfrecord``: no TensorFlow in the workers; any storage path). Only
   counts, statistics and reasons come back to this process, never image bytes, so the
   work spreads over ``min(workers, N)`` processes. ``workers=1`` runs inline.
3. Missing or undecodable images: by default the temporary shards are deleted and one
   DataError lists the first few and the count. With ``skip_bad`` they are left out and
   listed with the reason in ``PREFIX.report.json``.
4. An old ``PREFIX.meta.json`` is removed, shards are renamed into place, shards of an
   earlier run with another shard count are deleted, the report is written, and
   ``PREFIX.meta.json`` (``metadata``) is written last.

Images without annotations are kept as negatives. The metadata holds the box statistics
``prepare check`` reads (``stats``, see ``check``). The returned summary dict holds the
metadata plus ``report`` and ``metadata`` (paths).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import queue as queue_lib
import re
import sys
import time
from typing import Callable

from centernet_core import storage
from centernet_core.data import check
from centernet_core.data import metadata as meta_lib
from centernet_core.data import tfrecord
from centernet_core.data.coco_example import ImageTask, convert_image
from centernet_core.data.coco_json import CocoIndex, load_coco
from centernet_core.errors import ConfigError, DataError

IMAGES_PER_AUTO_SHARD = 1024
_SHOW_BAD = 5


def _tasks(index: CocoIndex, images_dir: str) -> list[ImageTask]:
    names = tuple(c.name for c in index.categories)
    joints = len(meta_lib.keypoint_names(index.categories))
    return [ImageTask(path=storage.join(images_dir, im.file_name), file_name=im.file_name, image_id=im.id,
                      json_hw=im.json_hw, annotations=tuple(im.annotations), category_names=names,
                      num_keypoints=joints)
            for im in index.images]


_progress = None  # a worker's queue for per-image progress (set by _init_worker)


def _init_worker(progress) -> None:
    global _progress
    _progress = progress


def _write_shard(job: tuple[str, list[ImageTask]]) -> list[tuple[str, str | None, dict]]:
    """Convert one shard's images in order into its (temporary) file.

    Returns ``(status, reason or None, stats)`` per image; the image bytes stay in the file.
    """
    path, tasks = job
    out = []
    unreported, last_report = 0, time.monotonic()
    writer = tfrecord.open_writer(path)
    try:
        for task in tasks:
            status, payload, stats = convert_image(task)
            if status == "ok":
                writer.write(payload)
                stats["objects"] = check.objects_of_example(payload)
                payload = None
            out.append((status, payload, stats))
            unreported += 1
            if _progress is not None and time.monotonic() - last_report >= 0.05:  # ~20 updates/s per worker
                _progress.put(unreported)
                unreported, last_report = 0, time.monotonic()
    finally:
        writer.close()
    if _progress is not None and unreported:
        _progress.put(unreported)
    return out


def _run_jobs(jobs: list, workers: int, total: int, on_progress) -> list:
    """``_write_shard`` over ``jobs`` in ``workers`` spawned processes (or inline for 1)."""
    if workers <= 1 or len(jobs) < 2:
        results, done = [], 0
        for path, tasks in jobs:
            results.append(_write_shard((path, tasks)))
            done += len(tasks)
            if on_progress:
                on_progress(done, total)
        return results
    # fork starts a worker in milliseconds, spawn in about a second (imports); but forking
    # a process that has TensorFlow loaded is unsafe (its threads do not survive a fork).
    # The workers never import TensorFlow themselves.
    safe_fork = sys.platform.startswith("linux") and "tensorflow" not in sys.modules
    ctx = mp.get_context("fork" if safe_fork else "spawn")
    progress = ctx.Queue() if on_progress else None
    with ctx.Pool(processes=min(workers, len(jobs)), initializer=_init_worker, initargs=(progress,)) as pool:
        pending = pool.map_async(_write_shard, jobs, chunksize=1)
        done = 0
        while progress is not None and not (pending.ready() and done >= total):
            try:  # a short wait: the last shard's end is noticed within 20 ms, not a whole timeout later
                done += progress.get(timeout=0.02)
            except queue_lib.Empty:
                if pending.ready():
                    break
                continue
            while done < total:  # drain what queued meanwhile: one progress update per wake-up
                try:
                    done += progress.get_nowait()
                except queue_lib.Empty:
                    break
            on_progress(done, total)
        return pending.get()


def _remove_stale_shards(output_prefix: str, finals: list[str]) -> None:
    """Delete shards of ``output_prefix`` left by an earlier run with another shard count.

    Shard globs (``PREFIX-*.tfrecord``) would otherwise read them alongside the new ones.
    Only exact ``PREFIX-0000i-of-0000N.tfrecord`` names go: ``PREFIX-other-...`` belongs
    to another dataset.
    """
    keep = {storage.basename(f) for f in finals}
    exact = re.compile(re.escape(storage.basename(output_prefix)) + r"-\d{5}-of-\d{5}\.tfrecord")
    for path in storage.glob(meta_lib.shard_pattern(output_prefix)):
        name = storage.basename(path)
        if name not in keep and exact.fullmatch(name):
            storage.remove(path)


def _bad_message(bad: list[dict], total: int) -> str:
    shown = "; ".join(f"{b['file_name']!r}: {b['reason']}" for b in bad[:_SHOW_BAD])
    more = f"; and {len(bad) - _SHOW_BAD} more" if len(bad) > _SHOW_BAD else ""
    return (f"{len(bad)} of {total} images are missing or undecodable: {shown}{more}. Nothing was written; "
            "fix the files or pass --skip-bad to leave them out (they are then listed in PREFIX.report.json)")


def write_coco_tfrecords(images_dir: str, annotations: str | CocoIndex, output_prefix: str,
                         num_shards: int = 0, workers: int = 1, skip_bad: bool = False,
                         on_progress: Callable[[int, int], None] | None = None,
                         source: dict | None = None) -> dict:
    """Convert a COCO detection dataset into sharded TFRecords and a metadata file.

    Args:
      images_dir: directory holding the json's ``file_name`` paths (any storage path).
      annotations: COCO instances json, or a validated in-memory ``CocoIndex``.
      output_prefix: shards go to ``PREFIX-0000i-of-0000N.tfrecord``, metadata to
        ``PREFIX.meta.json``, the report to ``PREFIX.report.json``.
      num_shards: N; 0 picks one shard per 1024 images (at least 1).
      workers: conversion processes; at most one per shard works (a shard is one job).
      skip_bad: leave out missing/undecodable images instead of failing.
      on_progress: called as ``on_progress(done, total)`` after each image.
      source: what the metadata's ``source`` says the data came from (default: the json
        and image directory).

    Returns:
      The metadata dict (counts, shard paths, categories) plus ``report`` and ``metadata``
      paths.
    """
    if num_shards < 0 or workers < 1:
        raise ConfigError("--shards must be >= 0 (0: automatic) and --workers >= 1")
    index = annotations if isinstance(annotations, CocoIndex) else load_coco(annotations)
    if source is None:
        source = {"annotations": annotations if isinstance(annotations, str) else "(in memory)",
                  "images": images_dir}
    if not storage.isdir(images_dir):
        raise DataError(f"image directory not found: {images_dir}")
    tasks = _tasks(index, images_dir)
    num_shards = num_shards or max(1, math.ceil(len(tasks) / IMAGES_PER_AUTO_SHARD))
    parent = storage.dirname(output_prefix)
    if parent:
        storage.makedirs(parent)
    finals = [meta_lib.shard_name(output_prefix, i, num_shards) for i in range(num_shards)]
    temps = [storage.temp_name(p) for p in finals]
    jobs = [(temps[s], tasks[s::num_shards]) for s in range(num_shards)]  # image i -> shard i mod N
    counts = {"images": 0, "negatives": 0, "boxes": 0, "crowd": 0, "clipped": 0, "dropped_empty": 0,
              "reencoded": 0, "size_mismatch": 0, "skipped_images": 0}
    bad, mismatches = [], []
    stats = check.DatasetStats(len(index.categories))
    try:
        per_shard = _run_jobs(jobs, workers, len(tasks), on_progress)
        for i, task in enumerate(tasks):  # in json order, so the report is too
            status, reason, info = per_shard[i % num_shards][i // num_shards]
            if status == "ok":
                stats.add(task.file_name, task.image_id, info["objects"])
                counts["images"] += 1
                counts["negatives"] += int(info["boxes"] == 0)
                for key in ("boxes", "crowd", "clipped", "dropped_empty", "reencoded", "size_mismatch"):
                    counts[key] += info[key]
                if info["size_mismatch"]:
                    mismatches.append({"file_name": task.file_name, "image_id": task.image_id,
                                       "json_hw": info["json_hw"], "decoded_hw": info["decoded_hw"]})
            else:
                bad.append({"file_name": task.file_name, "image_id": task.image_id, "reason": reason})
        if bad and not skip_bad:
            raise DataError(_bad_message(bad, len(tasks)))
    except BaseException:  # bad images, a worker crash, Ctrl-C: leave nothing behind
        for t in temps:
            if storage.exists(t):
                storage.remove(t)
        raise
    # From the first rename on the old dataset is no longer whole: its metadata goes first,
    # so no reader takes a mix of old and new shards for a finished dataset.
    if storage.exists(meta_lib.metadata_path(output_prefix)):
        storage.remove(meta_lib.metadata_path(output_prefix))
    for t, f in zip(temps, finals):
        storage.rename(t, f)
    _remove_stale_shards(output_prefix, finals)
    counts["skipped_images"] = len(bad)
    report_path = output_prefix + ".report.json"
    storage.write_text_atomic(report_path, json.dumps(
        {"skipped_images": bad, "size_mismatches": mismatches, "counts": counts}, indent=1, ensure_ascii=False))
    meta = {"images": counts["images"], "boxes": counts["boxes"], "counts": counts,
            "shards": [storage.basename(f) for f in finals],
            "categories": [{"index": c.index, "id": c.id, "name": c.name} for c in index.categories],
            "source": source, "stats": stats.to_dict()}
    meta.update(meta_lib.keypoint_metadata(index.categories))
    meta_path = meta_lib.write_metadata(output_prefix, meta)
    return {**meta, "shards": finals, "report": report_path, "metadata": meta_path}
