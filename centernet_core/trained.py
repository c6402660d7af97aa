"""A trained run as something to use: its config, its restored model and its category table.

Evaluation, export and prediction of a checkpoint all start here. ``path`` may be a run
directory written by ``centernet train`` (its newest checkpoint), its ``best/`` directory,
or a ``ckpt-N`` prefix inside either.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from centernet_core import checkpoints, storage
from centernet_core import config as config_lib
from centernet_core.errors import ConfigError, DataError


@dataclasses.dataclass
class TrainedModel:
    """``model`` (Keras, weights restored), ``cfg``, ``categories`` ``[{"index", "id", "name"}]``
    ordered by training index, and the ``checkpoint`` prefix the weights came from."""

    model: object
    cfg: object
    categories: list
    checkpoint: str

    @property
    def category_ids(self) -> list[int]:
        """Original category id of each training index."""
        from centernet_core.data.metadata import index_to_coco_id
        return list(index_to_coco_id(self.categories).values())

    @property
    def category_names(self) -> list[str]:
        return [str(c["name"]) for c in self.categories]


def run_categories(run_dir: str, cfg) -> list[dict]:
    """The category table of a run: ``dataset.meta.json`` in the run directory, else the
    metadata of the run's ``data.val`` / ``data.train`` datasets."""
    from centernet_core.data.metadata import load_metadata
    path = storage.join(run_dir, checkpoints.RUN_METADATA_FILENAME)
    if storage.exists(path):
        categories = json.loads(storage.read_text(path)).get("categories")
    else:
        categories = None
        for pattern in (cfg.data.val, cfg.data.train):
            if pattern:
                try:
                    categories = load_metadata(pattern)["categories"]
                    break
                except DataError:
                    continue
    if not categories:
        raise DataError(f"no category table for the run in {run_dir}: {checkpoints.RUN_METADATA_FILENAME} is "
                        "missing and data.val / data.train have no metadata; re-run `centernet train`")
    categories = sorted(categories, key=lambda c: int(c["index"]))
    if len(categories) != cfg.model.num_classes:
        raise DataError(f"the run's category table has {len(categories)} entries but model.num_classes is "
                        f"{cfg.model.num_classes}")
    return categories


def load_trained(path: str, overrides: Sequence[str] = ()) -> TrainedModel:
    """Rebuild the run's config and model, restore the checkpoint at ``path`` and freeze it.

    The model is for inference (eval, export, predict): each batch norm is folded into its
    conv once (``model.freeze_for_inference``) instead of on every call. Fine-tuning it is
    still correct (a ``training=True`` call unfreezes), but call ``model.unfreeze`` before
    changing its weights by other means.

    ``overrides`` are ``--set`` items applied to the run's config (e.g. ``eval.batch_size=4``);
    ``model.*`` overrides that change the architecture make the restore fail with a clear error.
    """
    import tensorflow as tf
    from centernet_core.model import build_model, freeze_for_inference

    cfg = config_lib.load_run_config(path, overrides)
    run_dir = config_lib.find_run_dir(path)
    ckpt = checkpoints.latest_checkpoint(path)
    if ckpt is None and storage.isdir(path) and path.rstrip("/") == run_dir.rstrip("/"):
        ckpt = checkpoints.latest_checkpoint(storage.join(run_dir, checkpoints.BEST_DIR))
    if ckpt is None:
        raise ConfigError(f"no checkpoint at {path}: pass a run directory of `centernet train` (with ckpt-N files) "
                          "or a ckpt-N prefix inside one")
    # The model must not try to load backbone_weights again: the checkpoint has them all.
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone_weights=""))
    model = build_model(cfg)  # every variable exists already: no call (and no conv kernel) before the restore
    try:
        tf.train.Checkpoint(**checkpoints.model_trackables(model)).restore(ckpt).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ConfigError(f"{ckpt} does not fit the model of {run_dir}/config.yaml "
                          f"({str(e).splitlines()[0]})") from None
    freeze_for_inference(model)  # after the restore: the folds are taken from the restored weights
    return TrainedModel(model=model, cfg=cfg, categories=run_categories(run_dir, cfg), checkpoint=ckpt)
