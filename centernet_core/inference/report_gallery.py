"""Gallery pictures of the report: one image with its ground truth and detections, and the
heatmap of the class involved beside it (Pillow; colours from a matplotlib colormap).

Styles, so the two never read alike: ground truth is a white box with a black inner
line and its class name inside the top-left corner (objects of the error drawn in red);
detections are ``draw.draw_detections``' class-coloured boxes captioned "name score"
above the box.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from centernet_core.draw import draw_detections

MAX_SIDE = 640  # gallery pictures are scaled down to this longest side
BLANK = (96, 96, 96)  # the canvas when no image loader is given or it returns None
ERROR_COLOR = (230, 30, 30)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _scale(image_hw: tuple[int, int]) -> float:
    return min(1.0, MAX_SIDE / max(image_hw))


def _boxes_yxyx(bboxes_xywh, scale: float) -> np.ndarray:
    """COCO [x, y, w, h] boxes -> [N, 4] (ymin, xmin, ymax, xmax), times ``scale``."""
    xywh = np.asarray(bboxes_xywh, np.float64).reshape(-1, 4) * scale
    return np.stack([xywh[:, 1], xywh[:, 0], xywh[:, 1] + xywh[:, 3], xywh[:, 0] + xywh[:, 2]], axis=1)


def _draw_ground_truth(image: Image.Image, gts: list[dict], names: dict, error_ids: set, scale: float):
    draw = ImageDraw.Draw(image)
    font = _font(max(10, min(image.size) // 40))
    for gt in gts:
        ymin, xmin, ymax, xmax = _boxes_yxyx([gt["bbox"]], scale)[0]
        outer = ERROR_COLOR if id(gt) in error_ids else (255, 255, 255)
        draw.rectangle([xmin, ymin, xmax, ymax], outline=outer, width=3)
        draw.rectangle([xmin + 1, ymin + 1, xmax - 1, ymax - 1], outline=(0, 0, 0), width=1)
        label = "GT: " + names.get(int(gt["category_id"]), str(gt["category_id"]))
        draw.text((xmin + 3, ymin + 3), label, fill=outer, font=font, stroke_width=1, stroke_fill=(0, 0, 0))


def _heatmap_panel(heatmap, size: tuple[int, int], title: str) -> Image.Image:
    """A heatmap in [0, 1] (any resolution, covering the image) as a magma picture of ``size``."""
    values = np.clip(np.nan_to_num(np.asarray(heatmap, np.float64)), 0.0, 1.0)
    rgb = (colormaps["magma"](values)[..., :3] * 255).astype(np.uint8)
    panel = Image.fromarray(rgb).resize(size, Image.NEAREST)
    ImageDraw.Draw(panel).text((4, 4), title, fill=(255, 255, 255), font=_font(max(10, min(size) // 30)),
                               stroke_width=1, stroke_fill=(0, 0, 0))
    return panel


def gallery_picture(image: np.ndarray | None, image_hw: tuple[int, int], gts: list[dict], dets: list[dict],
                    entry: dict, names: dict[int, str], heatmap=None) -> bytes:
    """PNG bytes of one gallery entry.

    Args:
      image: RGB uint8 [H, W, 3] of the original image, or None (a grey canvas of ``image_hw``).
      image_hw: (height, width) from the ground truth's image record.
      gts: the image's ground-truth annotations; dets: its detections above threshold.
      entry: the gallery entry (``report_errors.galleries``); its errors' objects drawn in red.
      names: category id -> name.
      heatmap: 2-D array in [0, 1] for ``entry["category_id"]``, or None (no panel).
    """
    h, w = (int(v) for v in image_hw)
    if image is None:
        base = Image.new("RGB", (w, h), BLANK)
    else:
        base = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
        h, w = base.height, base.width  # the pixels win over the record
    scale = _scale((h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = base.resize(size, Image.BILINEAR)
    error_boxes = {tuple(e["gt_bbox"]) for e in entry["errors"] if e["gt_bbox"] is not None}
    error_ids = {id(g) for g in gts if tuple(float(v) for v in g["bbox"]) in error_boxes}
    _draw_ground_truth(base, gts, names, error_ids, scale)
    if dets:
        base = draw_detections(base, _boxes_yxyx([d["bbox"] for d in dets], scale),
                               [float(d["score"]) for d in dets], [int(d["category_id"]) for d in dets],
                               [names.get(int(d["category_id"]), str(d["category_id"])) for d in dets])
    panels = [base]
    if heatmap is not None:
        name = names.get(entry["category_id"], str(entry["category_id"]))
        panels.append(_heatmap_panel(heatmap, size, f"heatmap: {name}"))
    out = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), size[1]), (255, 255, 255))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + 8
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()
