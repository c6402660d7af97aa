"""Your own data at equal CPU minutes: the custom presets against ultralytics YOLOv8n.

Run:  python bench/custom_data.py --voc DIR [--minutes 8] [--size 320] [--presets resnet18-custom,...]
      [--skip-yolo] [--work /tmp/cn-bench-custom]

A preset may carry overrides after colons, to measure a lever against the preset as it is in
the same run: ``--presets resnet18-custom,resnet18-custom:data.mosaic=0``.

``DIR`` holds ``images/`` and ``annotations/`` (Pascal VOC XML), e.g. the public raccoon set:
``git --git-dir=<fetched datitran/raccoon_dataset>/.git archive HEAD images annotations | tar -x -C DIR``.
Every 5th image (sorted by name) goes to validation. Each contestant trains from random
weights for the same wall-clock minutes on this machine (the step count of ours is set from
a short calibration run so the cosine schedule ends inside the budget), then all are scored
by the same pycocotools call on the same validation json (``eval --detections``). YOLOv8n
runs in its own venv (``bash ../shared/anchors/setup_ultralytics_venv.sh``; ``UL_VENV``),
offline, from ``yolov8n.yaml`` with ``pretrained=False``; its own mAP printout is not used.
Prints one JSON line per contestant: AP, AP50, minutes, and ours' AP by minute.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from anchor import UL_VENV  # bench/anchor.py (the script's folder is on sys.path)

PROBE_STEPS = 120
CLI = [sys.executable, "-c", "import sys\nfrom centernet_cli.main import main\nmain(sys.argv[1:])"]
YOLO_SCRIPT = r"""
import json, os, sys, time
from ultralytics import YOLO
data, size, minutes, val_dir, id_json, out = sys.argv[1:7]
started = time.time()
model = YOLO("yolov8n.yaml")
model.train(data=data, imgsz=int(size), time=float(minutes) / 60.0, device="cpu", workers=2, plots=False,
            pretrained=False, project=os.path.dirname(out), name="yolo", exist_ok=True, verbose=False, val=False)
trained_minutes = (time.time() - started) / 60.0
ids = json.load(open(id_json))
rows = []
for r in model.predict(source=val_dir, imgsz=int(size), conf=0.001, max_det=100, device="cpu", verbose=False,
                       stream=True):
    name = os.path.basename(r.path)
    for (x0, y0, x1, y1), s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist()):
        rows.append({"image_id": ids[name], "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "score": float(s)})
json.dump(rows, open(out, "w"))
print(json.dumps({"minutes": trained_minutes}))
"""


def cli(*args: str, timeout: int = 7200) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "COLUMNS": "200"})
    if r.returncode != 0:
        raise RuntimeError(f"centernet {' '.join(args[:2])} failed: {r.stderr[-2000:]}")
    return r.stdout


def score(results: str, gt: str) -> dict:
    """The same pycocotools call for every contestant (``centernet eval --detections``)."""
    from centernet_core.inference.evaluate import evaluate_detections
    return evaluate_detections(results, gt)


def split(voc: str, work: str) -> dict:
    """train / val folders of images + XML (every 5th image to val); the val COCO json."""
    from centernet_core.data import voc as voc_lib
    stems = sorted(f[:-4] for f in os.listdir(os.path.join(voc, "annotations")) if f.endswith(".xml"))
    # one class table for both splits (ids 1..C by sorted name over all files), so a class
    # missing from one split cannot shift the other's ids
    classes = [c["name"] for c in voc_lib.voc_to_coco(voc_lib.folder_files(os.path.join(voc, "annotations")))["categories"]]
    out = {"classes": classes}
    for part, chosen in (("train", [s for i, s in enumerate(stems) if i % 5]),
                         ("val", [s for i, s in enumerate(stems) if i % 5 == 0])):
        for sub in ("images", "xml"):
            os.makedirs(os.path.join(work, part, sub), exist_ok=True)
        for s in chosen:
            shutil.copy(os.path.join(voc, "annotations", s + ".xml"), os.path.join(work, part, "xml"))
            shutil.copy(os.path.join(voc, "images", s + ".jpg"), os.path.join(work, part, "images"))
        prefix = os.path.join(work, "data", part)
        cli("prepare", "voc", "--images", os.path.join(work, part, "images"), "--annotations",
            os.path.join(work, part, "xml"), "--classes", ",".join(classes), "--output", prefix)
        out[part] = prefix
    gt = voc_lib.voc_to_coco(voc_lib.folder_files(os.path.join(work, "val", "xml")), classes)
    # image sizes from the pictures where the XML has none (the writer does the same)
    from PIL import Image
    for im in gt["images"]:
        if not im.get("height"):
            with Image.open(os.path.join(work, "val", "images", im["file_name"])) as pic:
                im["width"], im["height"] = pic.size
    for a in gt["annotations"]:  # what pycocotools reads beyond the box; difficult -> iscrowd (ignored)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    out["gt"] = os.path.join(work, "instances_val.json")
    json.dump(gt, open(out["gt"], "w"))
    return out


def ours(contestant: str, data: dict, size: int, minutes: float, work: str) -> dict:
    preset, *overrides = contestant.split(":")
    base = ["-e", preset, "-p", "cpu-bf16", "--data", data["train"] + "-*.tfrecord", "--no-progress",
            "--set", f"model.input_size={size}", *[a for o in overrides for a in ("--set", o)]]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", contestant)
    probe = os.path.join(work, f"probe-{name}")
    shutil.rmtree(probe, ignore_errors=True)
    began = time.perf_counter()
    log = cli("train", *base, "-m", probe, "--set", "train.epochs=0", "--set", f"train.steps={PROBE_STEPS}",
              "--set", "train.warmup_steps=1", "--set", "train.log_every=20")
    startup = time.perf_counter() - began
    rates = [float(x) for x in re.findall(r"([0-9.]+) img/s", log)]  # the tracing window prints no rate
    batch = 16  # the cpu-bf16 profile's global batch
    per_step = batch / statistics.median(rates) if rates else startup / PROBE_STEPS
    # the budget pays for start-up (measured: the probe minus its steps) and four evaluations
    # (a quarter of it: 40 pictures each). Twice the start-up left 3.7 of 10 minutes unused.
    overhead = max(0.0, startup - PROBE_STEPS * per_step)
    steps = max(50, int((minutes * 60 - 1.25 * overhead) / per_step))
    run = os.path.join(work, f"run-{name}")
    shutil.rmtree(run, ignore_errors=True)
    began = time.perf_counter()
    cli("train", *base, "-m", run, "--val-data", data["val"] + "-*.tfrecord", "--set", "train.epochs=0",
        "--set", f"train.steps={steps}", "--set", f"train.warmup_steps={max(1, steps // 30)}",
        "--eval-every", str(max(1, steps // 4)), "--set", "train.checkpoint_every=100000")
    trained = (time.perf_counter() - began) / 60
    results = os.path.join(work, f"results-{name}.json")
    cli("eval", "--ckpt", run, "--output", results)
    scored = score(results, data["gt"])
    curve = [(round(h["minutes"], 2), round(h["AP50"], 4), round(h["AP"], 4))
             for h in map(json.loads, open(os.path.join(run, "eval.jsonl")))]
    return {"system": contestant, "steps": steps, "minutes": round(trained, 2), "AP": scored["AP"],
            "AP50": scored["AP50"], "curve_minutes_AP50_AP": curve}


def yolo(data: dict, size: int, minutes: float, work: str) -> dict:
    from centernet_core.data import voc as voc_lib
    root = os.path.join(work, "yolo")
    gt = json.load(open(data["gt"]))
    for part in ("train", "val"):
        os.makedirs(os.path.join(root, part, "labels"), exist_ok=True)
        if not os.path.exists(os.path.join(root, part, "images")):  # a copy: ultralytics finds labels/ beside it
            shutil.copytree(os.path.join(work, part, "images"), os.path.join(root, part, "images"))
        d = voc_lib.voc_to_coco(voc_lib.folder_files(os.path.join(work, part, "xml")), data["classes"])
        from PIL import Image
        for im in d["images"]:
            with Image.open(os.path.join(work, part, "images", im["file_name"])) as pic:
                w, h = pic.size
            lines = [f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / w:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / h:.6f} {a['bbox'][2] / w:.6f} {a['bbox'][3] / h:.6f}"
                     for a in d["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]]  # as ours: difficult is not a target
            stem = os.path.splitext(im["file_name"])[0]
            open(os.path.join(root, part, "labels", stem + ".txt"), "w").write("\n".join(lines))
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    yaml_path = os.path.join(root, "data.yaml")
    open(yaml_path, "w").write(json.dumps({"path": root, "train": "train/images", "val": "val/images",
                                           "names": names}))
    ids = os.path.join(root, "ids.json")
    json.dump({im["file_name"]: im["id"] for im in gt["images"]}, open(ids, "w"))
    results = os.path.join(root, "results.json")
    r = subprocess.run([os.path.join(UL_VENV, "bin", "python"), "-c", YOLO_SCRIPT, yaml_path, str(size),
                        str(minutes), os.path.join(work, "val", "images"), ids, results],
                       capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=7200)
    if r.returncode != 0:
        raise RuntimeError(f"ultralytics failed: {r.stderr[-2000:]}")
    trained = json.loads(r.stdout.strip().splitlines()[-1])["minutes"]
    scored = score(results, data["gt"])
    return {"system": "yolov8n (scratch)", "minutes": round(trained, 2), "AP": scored["AP"], "AP50": scored["AP50"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voc", required=True)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--presets", default="resnet18-custom,mobilenetv2-custom")
    p.add_argument("--skip-yolo", action="store_true")
    p.add_argument("--work", default="/tmp/cn-bench-custom")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    data = split(args.voc, args.work)
    # a comma starts a new contestant only before a name (override values may hold commas)
    for preset in re.split(r",(?=[A-Za-z][^,=:]*(?::|,|$))", args.presets):
        print(json.dumps(ours(preset, data, args.size, args.minutes, args.work)), flush=True)
    if not args.skip_yolo:
        print(json.dumps(yolo(data, args.size, args.minutes, args.work)), flush=True)


if __name__ == "__main__":
    main()
