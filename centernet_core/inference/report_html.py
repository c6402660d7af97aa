"""``index.html`` of the evaluation report: one self-contained page, readable offline.

Only relative links to the report's own files; CSS and the one script are inline (no
CDN, no fonts, nothing fetched). The script runs after the page loads and marks each
``<img>`` with ``data-loaded="yes"`` or ``"no"`` (``naturalWidth`` 0: missing or broken
file), sets ``data-images-checked`` and ``data-images-broken`` on ``<body>``, and names
the broken files at the top of the page, so a reader (or a headless browser's DOM dump)
sees at once when the report is incomplete.
"""
from __future__ import annotations

from html import escape

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1, h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.name { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; max-width: 100%; }
figcaption { font-size: 12px; max-width: 640px; }
#broken { background: #fdd; border: 1px solid #c00; padding: .5em; }
.note { color: #555; font-size: 13px; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = [];
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (!ok) broken.push(images[i].getAttribute("src"));
  }
  document.body.setAttribute("data-images-checked", String(images.length));
  document.body.setAttribute("data-images-broken", String(broken.length));
  if (broken.length) {
    var note = document.getElementById("broken");
    note.textContent = broken.length + " image(s) failed to load: " + broken.join(", ");
    note.hidden = false;
  }
});
"""


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list], name_columns: int = 0) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join((f'<td class="name">' if i < name_columns else "<td>") + f"{escape(str(v))}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(src: str, alt: str) -> str:
    return f'<img src="{escape(src)}" alt="{escape(alt)}">'


def _overall(report: dict) -> str:
    stats = report["overall"]
    rows = [[name, _num(value)] for name, value in stats.items()]
    counts = (f'{report["num_images"]} images, {report["num_gt"]} objects, '
              f'{report["num_detections"]} detections')
    return f"<h2>Summary</h2><p>{escape(counts)}</p>" + _table(["metric", "value"], rows, 1)


def _classes(report: dict) -> str:
    rows = [[c["category_id"], c["name"], _num(c["AP"]), _num(c["AP50"]), _num(c["AP75"]), _num(c["AR"]),
             _num(c["AP_small"]), _num(c["AP_medium"]), _num(c["AP_large"]), c["num_gt"], c["num_images"],
             c["num_detections"], _num(c["best_threshold"], 2)] for c in report["classes"]]
    header = ["id", "name", "AP", "AP50", "AP75", "AR", "AP small", "AP medium", "AP large",
              "objects", "images", "detections", "best threshold"]
    files = report["files"]
    return ("<h2>Per class</h2>" + _table(header, rows, 2)
            + '<p class="note">AP over IoU 0.50:0.95, AR with 100 detections per image; best threshold: '
              "the score with the best F1 at IoU 0.5.</p>"
            + "<h3>Precision-recall (IoU 0.5 and 0.75)</h3>"
            + _img(files["pr_curves"], "precision-recall curves")
            + "<h3>F1 against score threshold (IoU 0.5)</h3>" + _img(files["f1"], "F1 curves"))


def _confusion(report: dict) -> str:
    totals = report["errors"]
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in totals.items())
    return ("<h2>Confusion matrix</h2>"
            '<p class="note">IoU 0.5, each class at its best threshold. Rows: ground truth; columns: '
            "prediction; the background row counts false positives, the background column missed "
            f'objects ({escape(counts)}). Numbers: <a href="{escape(report["files"]["confusion_json"])}">'
            "confusion.json</a>.</p>" + _img(report["files"]["confusion"], "confusion matrix"))


def _breakdowns(report: dict) -> str:
    size_rows = [[r["area"], f'{r["range"][0]:g}-{r["range"][1]:g}', _num(r["AP"]), _num(r["AP50"]),
                  _num(r["AR"])] for r in report["by_size"]]
    object_rows = [[r["objects"], r["num_images"], r["num_objects"], _num(r["AP"]), _num(r["AP50"]),
                    _num(r["AR"])] for r in report["by_objects_per_image"]]
    return ("<h2>By object size</h2>" + _table(["area", "pixels²", "AP", "AP50", "AR"], size_rows, 1)
            + _img(report["files"]["by_size"], "AP by object size")
            + "<h2>By objects per image</h2>"
            + _table(["objects", "images", "total objects", "AP", "AP50", "AR"], object_rows, 1)
            + _img(report["files"]["by_objects"], "AP by objects per image"))


GALLERY_TITLES = {"missed": "Missed objects", "false_positive": "False positives",
                  "wrong_class": "Wrong class"}


def _describe(error: dict, names: dict) -> str:
    """One error in words: "triangle seen as square 0.90 at [150, 20, 50, 45]"."""
    def name(category_id):
        return str(names.get(category_id, category_id))
    box = [round(v) for v in (error["bbox"] or error["gt_bbox"])]
    if error["bbox"] is None:
        return f'{name(error["gt_category_id"])} missed at {box}'
    seen = f'{name(error["category_id"])} {error["score"]:.2f} at {box}'
    return seen if error["gt_category_id"] is None else f'{name(error["gt_category_id"])} seen as {seen}'


def _gallery(report: dict) -> str:
    names = {c["category_id"]: c["name"] for c in report["classes"]}
    parts = ["<h2>Worst images</h2>"
             '<p class="note">Ground truth: white boxes with a black inner line, labelled "GT:" '
             "(the errors' objects in red); detections above their class threshold: coloured boxes "
             "captioned with class and score. The heatmap beside a picture is the class named.</p>"]
    for kind, entries in report["galleries"].items():
        parts.append(f"<h3>{escape(GALLERY_TITLES[kind])}</h3>")
        if not entries:
            parts.append('<p class="note">none</p>')
        for e in entries:
            caption = (f'image {e["image_id"]}: {e["count"]} {kind.replace("_", " ")}, '
                       f'class {names.get(e["category_id"], e["category_id"])}: '
                       + "; ".join(_describe(err, names) for err in e["errors"][:3]))
            parts.append(f"<figure>{_img(e['image'], caption)}"
                         f"<figcaption>{escape(caption)}</figcaption></figure>")
    return "".join(parts)


def render(report: dict, title: str = "Evaluation report") -> str:
    """The page for ``report`` (the dict written as report.json, with its ``files`` table)."""
    body = (_overall(report) + _classes(report) + _confusion(report) + _breakdowns(report)
            + _gallery(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>"
            f'<body><h1>{escape(title)}</h1><p id="broken" hidden></p>'
            f'<p class="note">All numbers: <a href="report.json">report.json</a>; per-class table: '
            f'<a href="per_class.txt">per_class.txt</a>.</p>{body}</body></html>\n')
