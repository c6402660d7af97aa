"""The synthetic keypoint set of ``centernet prepare shapes --keypoints``: kites.

One category (COCO id 1, ``kite``) with four named keypoints, ``top``, ``left_wing``,
``right_wing``, ``bottom`` (flip pairs from the names: the wings swap), a skeleton (the
outline and the spine) and OKS sigmas 0.08 (stated in the json's category, ``sigmas``).
Each image has a noisy two-colour gradient background and 1-3 filled kites (a diamond
whose top and bottom lean left or right and whose wings sit at 30-60 % of its height),
long side 25-50 % of the image's short side, overlapping little, every corner visible
(v = 2). Keypoints are the corners' pixel centres; a kite's box is its corners' extent
and its area the polygon's. Small enough to train on a CPU in minutes.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from centernet_core.data import shapes

NAMES = ("top", "left_wing", "right_wing", "bottom")
SKELETON = ((1, 2), (2, 4), (4, 3), (3, 1), (1, 4))
SIGMA = 0.08
CATEGORIES = ({"id": 1, "name": "kite", "keypoints": list(NAMES), "skeleton": [list(e) for e in SKELETON],
               "sigmas": [SIGMA] * len(NAMES)},)


def draw_image(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    """One picture and its objects ``[{"bbox", "category_id", "area", "keypoints", "num_keypoints"}]``."""
    h, w = hw
    pixels = shapes._background(rng, hw)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    mean = pixels.reshape(-1, 3).mean(0)
    placed, objects = [], []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            bh = int(round(rng.uniform(0.25, 0.50) * min(h, w)))
            bw = int(round(bh * rng.uniform(0.5, 0.9)))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            if not shapes._overlaps_too_much((x, y, bw, bh), placed):
                break
        else:
            continue
        x1, y1 = x + bw - 1, y + bh - 1
        wing_y = y + rng.uniform(0.3, 0.6) * (bh - 1)
        top_x, bottom_x = (x + rng.uniform(0.3, 0.7) * (bw - 1) for _ in range(2))
        corners = [(top_x, y), (x, wing_y), (x1, wing_y), (bottom_x, y1)]  # NAMES order, (x, y) pixels
        draw.polygon([corners[0], corners[1], corners[3], corners[2]], fill=shapes._colour_apart(rng, mean))
        placed.append((x, y, bw, bh))
        keypoints = []
        for cx, cy in corners:
            keypoints += [round(cx + 0.5, 2), round(cy + 0.5, 2), 2]
        objects.append({"bbox": [float(x), float(y), float(bw), float(bh)], "category_id": 1,
                        "area": round(bw * bh / 2.0, 2), "keypoints": keypoints, "num_keypoints": len(NAMES)})
    return image, objects
