"""The package's shape: imports run one way, and no module grows past 400 lines.

Every ``import`` / ``from ... import`` of every module under ``centernet_core`` (at any
depth, including imports inside functions) is read with ``ast`` and checked against the
layers in docs/design.md:

    cli -> demo -> training, inference, importers -> modeling, tasks, data -> the vocabulary
    (errors, storage, boxes, pixels, strides, run_dir, config, draw, tf_setup, distribute)

plus the rules that matter most: model building never imports data, training or inference;
inference never imports training; a task never imports modeling, data, training or inference.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, "centernet_core")

# Packages and the packages they must never import (``centernet_core.<name>``).
FORBIDDEN = {
    "modeling": {"data", "training", "inference", "importers", "demo"},
    "tasks": {"modeling", "data", "training", "inference", "importers", "demo"},
    "data": {"modeling", "training", "inference", "importers", "demo"},
    "inference": {"training", "importers", "demo"},
    "training": {"importers", "demo"},
    "importers": {"training", "inference", "demo"},
}
VOCABULARY = {"errors", "storage", "boxes", "pixels", "strides", "run_dir", "config", "draw", "tf_setup",
              "distribute"}
ABOVE_VOCABULARY = {"data", "tasks", "modeling", "training", "inference", "importers", "demo"}


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)
                yield rel.replace(os.sep, "/"), path


def _imported(path: str) -> set[str]:
    """Top-level subpackages / modules of centernet_core that ``path`` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "centernet_core":
                names = [a.name for a in node.names]
            elif node.module.startswith("centernet_core."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("centernet_core.")]
        out.update(names)
    return out


def _owner(rel: str) -> str:
    """``modeling/backbones/resnet.py`` -> "modeling"; ``storage.py`` -> "storage"."""
    return rel.split("/")[0].removesuffix(".py")


def violations(root_modules=None) -> list[str]:
    found = []
    for rel, path in root_modules or _modules():
        owner = _owner(rel)
        imported = _imported(path) - {owner}
        bad = imported & FORBIDDEN.get(owner, set())
        if owner in VOCABULARY:
            bad |= imported & ABOVE_VOCABULARY
        found += [f"{rel} imports centernet_core.{b}" for b in sorted(bad)]
    return found


def test_imports_run_one_way():
    assert violations() == []


def test_the_check_catches_a_backbone_that_imports_data(tmp_path):
    planted = tmp_path / "resnet.py"
    planted.write_text("def f():\n    from centernet_core.data.augment import transform_boxes\n")
    vocabulary = tmp_path / "boxes.py"
    vocabulary.write_text("from centernet_core import training\n")
    inference = tmp_path / "predict.py"
    inference.write_text("import centernet_core.training.loop\n")
    found = violations([("modeling/backbones/resnet.py", str(planted)), ("boxes.py", str(vocabulary)),
                        ("inference/predict.py", str(inference))])
    assert found == ["modeling/backbones/resnet.py imports centernet_core.data",
                     "boxes.py imports centernet_core.training",
                     "inference/predict.py imports centernet_core.training"]


@pytest.mark.parametrize("folder", ["centernet_core", "cli", "tests", "bench"])
def test_no_python_file_over_400_lines(folder):
    top = os.path.join(os.path.dirname(__file__), os.pardir, folder)
    long = []
    for base, _, files in os.walk(top):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                n = sum(1 for _ in open(path, encoding="utf-8"))
                if n > 400:
                    long.append(f"{os.path.relpath(path, top)} ({n} lines)")
    assert long == []
