"""`prepare coco` images/s vs reading the files raw and vs Model Garden's converter.

    python bench/prepare.py [--images 2000] [--dir /tmp/cn-bench-prepare]

Writes (once) 2,000 `prepare shapes` JPEGs at 640x480 with their COCO json, warms the
page cache by reading every file, then times, each as a fresh command (process start and
TensorFlow import included, as a user sees it):
  raw:  reading every image file's bytes (the I/O floor), in this process;
  ours: `centernet prepare coco --workers 1` and `--workers 2`;
  mg:   Model Garden's create_coco_tf_record (anchor venv; default --num_processes = CPUs).
Prints images/s and the ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from centernet_core.data.shapes import write_split

ANCHOR_PY = "/tmp/anchor-venv/bin/python"
RUN_MG = "/work/shared/anchors/run_mg.py"


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--dir", default="/tmp/cn-bench-prepare")
    p.add_argument("--shards", type=int, default=8)
    a = p.parse_args()
    ann = os.path.join(a.dir, "instances_train.json")
    if not os.path.exists(ann):
        write_split(a.dir, "train", a.images, (480, 640), seed=0)
    images = os.path.join(a.dir, "images", "train")
    files = [os.path.join(images, f) for f in sorted(os.listdir(images))]
    n = len(files)
    for f in files:  # warm the page cache for every contestant
        open(f, "rb").read()
    start = time.perf_counter()
    total = sum(len(open(f, "rb").read()) for f in files)
    raw = time.perf_counter() - start
    out = os.path.join(a.dir, "out")
    centernet = [sys.executable, "-m", "centernet_cli.main"]
    results = {}
    for workers in (1, 2):
        shutil.rmtree(out, ignore_errors=True)
        results[f"ours, {workers} worker(s)"] = timed(centernet + [
            "prepare", "coco", "--images", images, "--annotations", ann, "--output", os.path.join(out, "ours"),
            "--shards", str(a.shards), "--workers", str(workers)])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = dict(os.environ, PYTHONPATH="/tmp/anchor-venv/mg")
    results["model garden (2 processes)"] = timed([
        ANCHOR_PY, RUN_MG, "official.vision.data.create_coco_tf_record", f"--image_dir={images}",
        f"--object_annotations_file={ann}", f"--output_file_prefix={os.path.join(out, 'mg')}",
        f"--num_shards={a.shards}"], env=env)
    print(f"cpus={os.cpu_count()} images={n} (640x480 JPEG, {total / n / 1024:.0f} KiB avg) shards={a.shards}")
    print(f"raw file read: {n / raw:.0f} img/s")
    for name, seconds in results.items():
        print(f"{name}: {n / seconds:.0f} img/s ({seconds:.1f} s)")
    ours1, ours2 = results["ours, 1 worker(s)"], results["ours, 2 worker(s)"]
    mg = results["model garden (2 processes)"]
    print(f"ratio 2 workers / 1 worker: {ours1 / ours2:.2f}")
    print(f"ratio ours (2 workers) / model garden: {mg / ours2:.2f}")
    print(f"ratio ours (2 workers) / raw read: {raw / ours2:.3f}")


if __name__ == "__main__":
    main()
