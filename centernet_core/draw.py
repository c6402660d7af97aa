"""Drawing labelled detection boxes (and keypoint skeletons) on a picture with Pillow (no TensorFlow)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A fixed, colour-blind-friendly cycle (Okabe-Ito, then Tableau): class k always gets the same
# colour, so pictures of one run compare at a glance.
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
           (213, 94, 0), (204, 121, 167), (31, 119, 180), (255, 127, 14), (44, 160, 44),
           (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127))


def color_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def _font(image_hw: tuple[int, int]):
    size = max(10, min(image_hw) // 40)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


JOINT_FILL = (255, 255, 255)  # joints: white dots ringed in the class colour


def draw_skeleton(draw: ImageDraw.ImageDraw, keypoints_yx_abs: np.ndarray, edges: Sequence[tuple[int, int]],
                  color: tuple[int, int, int], line: int) -> None:
    """One object's skeleton: a ``color`` line per edge (0-based joint pair), then a dot per joint.

    keypoints_yx_abs: [J, 2] (y, x) in the image's pixels.
    """
    yx = np.asarray(keypoints_yx_abs, np.float64)
    for a, b in edges:
        draw.line([(yx[a, 1], yx[a, 0]), (yx[b, 1], yx[b, 0])], fill=color, width=line)
    r = line + 1
    for y, x in yx:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=JOINT_FILL, outline=color)


def draw_detections(image: Image.Image, boxes_yxyx_abs: np.ndarray, scores: Sequence[float],
                    class_ids: Sequence[int], labels: Sequence[str], keypoints_yx_abs: np.ndarray | None = None,
                    edges: Sequence[tuple[int, int]] = ()) -> Image.Image:
    """Return an RGB copy of ``image`` with each box outlined and captioned "label 0.87".

    Args:
      image: any Pillow image (converted to RGB).
      boxes_yxyx_abs: [N, 4] (ymin, xmin, ymax, xmax) in the image's pixels.
      scores: [N]; class_ids: [N] (pick the colour); labels: [N] caption text.
      keypoints_yx_abs: [N, J, 2] (y, x) pixels (the keypoints task): each object's skeleton
        is drawn in its class colour along ``edges`` (0-based joint pairs), joints as dots.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = _font((out.height, out.width))
    line = max(1, min(out.size) // 200)
    # Draw the weakest first so the strongest boxes and captions end up on top.
    for i in np.argsort(np.asarray(scores, np.float64), kind="stable"):
        ymin, xmin, ymax, xmax = (float(v) for v in boxes_yxyx_abs[i])
        ymin, ymax = sorted((ymin, ymax))  # a predicted negative size flips the corners
        xmin, xmax = sorted((xmin, xmax))
        color = color_for(class_ids[i])
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=line)
        if keypoints_yx_abs is not None:
            draw_skeleton(draw, keypoints_yx_abs[i], edges, color, max(2, line))
        caption = f"{labels[i]} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tw, th = right - left, bottom - top + 2
        ty = ymin - th if ymin - th >= 0 else ymin  # above the box, or inside it at the top edge
        tx = max(0.0, min(xmin, out.width - tw - 4))  # keep the caption inside the picture
        draw.rectangle([tx, ty, tx + tw + 4, ty + th], fill=color)
        draw.text((tx + 2, ty - top + 1), caption, fill=(0, 0, 0), font=font)
    return out
