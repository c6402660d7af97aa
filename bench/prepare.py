"""`prepare coco` images/s vs reading the files raw and vs Model Garden's converter.

    python bench/prepare.py [--images 2000] [--dir /tmp/cn-bench-prepare] [--rounds 2]

Writes (once) 2,000 `prepare shapes` JPEGs at 640x480 with their COCO json, warms the
page cache by reading every file, then times, each as a fresh command (process start and
any TensorFlow import included, as a user sees it):
  raw:  reading every image file's bytes (the I/O floor), in this process;
  ours: `centernet prepare coco --workers 1` and `--workers 2` (8 shards);
  mg:   Model Garden's create_coco_tf_record (anchor venv; default --num_processes = CPUs).
The contestants run in turn, ``--rounds`` times (the machine is shared: interleaving
spreads its drift over all of them). Prints each round's times and ratios, and the
ratios of the best times.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import anchor  # bench/anchor.py (run from bench/ or with it on sys.path, as the other benchmarks)
from centernet_core.data.shapes import write_split

ANCHOR_PY = anchor.ANCHOR_PYTHON
RUN_MG = os.path.join(anchor.SHARED, "anchors", "run_mg.py")


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--dir", default="/tmp/cn-bench-prepare")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
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
    env = dict(os.environ, **anchor.ANCHOR_ENV)

    def ours(workers: int) -> float:
        shutil.rmtree(out, ignore_errors=True)
        return timed(centernet + ["prepare", "coco", "--images", images, "--annotations", ann, "--output",
                                  os.path.join(out, "ours"), "--shards", str(a.shards), "--workers", str(workers)])

    def mg() -> float:
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        return timed([ANCHOR_PY, RUN_MG, "official.vision.data.create_coco_tf_record", f"--image_dir={images}",
                      f"--object_annotations_file={ann}", f"--output_file_prefix={os.path.join(out, 'mg')}",
                      f"--num_shards={a.shards}"], env=env)

    contestants = {"ours, 1 worker": lambda: ours(1), "ours, 2 workers": lambda: ours(2),
                   "model garden (2 processes)": mg}
    runs = {name: [] for name in contestants}
    print(f"cpus={os.cpu_count()} images={n} (640x480 JPEG, {total / n / 1024:.0f} KiB avg) shards={a.shards}")
    print(f"raw file read: {n / raw:.0f} img/s")
    for r in range(a.rounds):
        for name, run in contestants.items():
            runs[name].append(run())
        t = {name: v[-1] for name, v in runs.items()}
        one, two, m = t["ours, 1 worker"], t["ours, 2 workers"], t["model garden (2 processes)"]
        print(f"round {r + 1}: " + ", ".join(f"{name} {s:.1f} s ({n / s:.0f} img/s)" for name, s in t.items())
              + f"; 2 workers / 1 worker {one / two:.2f}x, ours (2 workers) / model garden {m / two:.2f}x")
    best = {name: min(v) for name, v in runs.items()}
    one, two, m = best["ours, 1 worker"], best["ours, 2 workers"], best["model garden (2 processes)"]
    print(f"best of {a.rounds}: 2 workers / 1 worker {one / two:.2f}x; ours (2 workers) / model garden "
          f"{m / two:.2f}x; ours (1 worker) / model garden {m / one:.2f}x; ours (2 workers) / raw read {raw / two:.3f}")


if __name__ == "__main__":
    main()
