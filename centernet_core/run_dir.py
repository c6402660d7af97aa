"""The one owner of a run directory: its layout, and reading and writing its files.

Layout of a run directory (``--model-dir``; written by the chief process only)::

    config.yaml            the resolved config
    dataset.meta.json      the training set's metadata, including its category table
    checkpoint, ckpt-N.*   the last ``train.keep_checkpoints`` checkpoints
    best/ckpt-N.*          the checkpoint with the highest eval AP so far
    best/best.json         its step and metrics
    eval.jsonl             one line per evaluation during training
    logs/train, logs/eval  TensorBoard events
    import.json            where imported weights came from (``centernet import`` only)

Everything else asks this module for names and contents; nobody else spells a file name
of the layout. A *new* run directory made in one go (``centernet import``) is written
through ``storage.staged_directory``: all of it or nothing. Training writes its files
into an existing or empty directory as it goes (checkpoints are atomic on their own).
"""
from __future__ import annotations

import json
from typing import Sequence

from centernet_core import config as config_lib
from centernet_core import storage
from centernet_core.errors import ConfigError

CONFIG_FILE = "config.yaml"
METADATA_FILE = "dataset.meta.json"
CHECKPOINT_NAME = "ckpt"
BEST_DIR = "best"
BEST_FILE = "best.json"
EVAL_HISTORY_FILE = "eval.jsonl"
LOGS_DIR = "logs"
IMPORT_FILE = "import.json"


def find(path: str) -> str:
    """The run directory of ``path``: the directory itself or the one holding a checkpoint."""
    candidates = [path, storage.dirname(path), storage.dirname(storage.dirname(path))]
    for c in candidates:
        if c and storage.exists(storage.join(c, CONFIG_FILE)):
            return c
    raise ConfigError(f"no {CONFIG_FILE} found at or above {path}; pass a run directory written by "
                      "`centernet train` (or a checkpoint inside one)")


def holds_run(run_dir: str) -> bool:
    """True when ``run_dir`` already holds a run (its ``config.yaml``)."""
    return storage.exists(storage.join(run_dir, CONFIG_FILE))


def load_config(path: str, overrides: Sequence[str] = ()):
    """The exact ``ExperimentConfig`` of the run at ``path`` (a run directory or a checkpoint in
    it), with ``overrides`` (``a.b=value`` items) applied and validated."""
    cfg_path = storage.join(find(path), CONFIG_FILE)
    return config_lib.from_yaml_text(storage.read_text(cfg_path), cfg_path, overrides)


def write_config(cfg, run_dir: str) -> str:
    """Write the resolved config into ``run_dir`` (atomically) and return its path."""
    path = storage.join(run_dir, CONFIG_FILE)
    storage.write_text_atomic(path, config_lib.dump_yaml(cfg))
    return path


def write_run_files(cfg, run_dir: str, metadata: dict | None) -> None:
    """The resolved config and (when given) the dataset metadata with its category table."""
    storage.makedirs(run_dir)
    write_config(cfg, run_dir)
    if metadata is not None:
        storage.write_text_atomic(storage.join(run_dir, METADATA_FILE),
                                  json.dumps(metadata, indent=1, ensure_ascii=False))


def read_metadata(run_dir: str) -> dict | None:
    """The run's ``dataset.meta.json`` as a dict, or None when the run has none."""
    path = storage.join(run_dir, METADATA_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None


def read_categories(run_dir: str) -> list[dict] | None:
    """The run's category table ``[{"index", "id", "name"}]`` ordered by index, or None."""
    meta = read_metadata(run_dir)
    if not meta or not meta.get("categories"):
        return None
    return sorted(meta["categories"], key=lambda c: int(c["index"]))


def category_table(metadata: dict) -> list[tuple[int, int, str]]:
    """``(index, id, name)`` rows of a metadata dict's category table, sorted by index."""
    return sorted((int(c["index"]), int(c["id"]), str(c["name"])) for c in metadata.get("categories", []))


# ---------------------------------------------------------------- checkpoints

def checkpoint_dir(run_dir: str, best: bool = False) -> str:
    """Where the run's checkpoints live: ``run_dir`` or its ``best/``."""
    return storage.join(run_dir, BEST_DIR) if best else run_dir


def latest_checkpoint(path: str) -> str | None:
    """The newest checkpoint prefix in directory ``path``, or ``path`` itself if it is one."""
    if storage.exists(path + ".index"):
        return path
    if not storage.isdir(path):
        return None
    import tensorflow as tf
    return tf.train.latest_checkpoint(path)


def checkpoint_to_use(path: str) -> str | None:
    """The checkpoint that eval / export / predict use for ``path``: a ``ckpt-N`` prefix as
    given, else the newest in the directory, else (for a run directory) the one in ``best/``."""
    ckpt = latest_checkpoint(path)
    if ckpt is None and storage.isdir(path) and path.rstrip("/") == find(path).rstrip("/"):
        ckpt = latest_checkpoint(checkpoint_dir(path, best=True))
    return ckpt


def read_best(run_dir: str) -> dict | None:
    """``best/best.json``: ``{"step", "key", "metrics"}`` of the best checkpoint, or None."""
    path = storage.join(run_dir, BEST_DIR, BEST_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None


def write_best(run_dir: str, record: dict) -> None:
    storage.write_text_atomic(storage.join(run_dir, BEST_DIR, BEST_FILE), json.dumps(record, indent=1))


# ---------------------------------------------------------------- history and logs

def append_eval_history(run_dir: str, line: dict) -> None:
    """Add one evaluation's line to ``eval.jsonl`` (rewritten atomically, so a crash keeps the old file)."""
    path = storage.join(run_dir, EVAL_HISTORY_FILE)
    old = storage.read_text(path) if storage.exists(path) else ""
    storage.write_text_atomic(path, old + json.dumps(line) + "\n")


def read_eval_history(run_dir: str) -> list[dict]:
    path = storage.join(run_dir, EVAL_HISTORY_FILE)
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def log_dir(run_dir: str, name: str) -> str:
    """TensorBoard folder ``logs/<name>`` ("train" or "eval")."""
    return storage.join(run_dir, LOGS_DIR, name)


def write_import_record(run_dir: str, summary: dict) -> None:
    storage.write_text_atomic(storage.join(run_dir, IMPORT_FILE), json.dumps(summary, indent=1))
