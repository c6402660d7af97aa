"""A trained run as something to use: its config, its restored model and its category table.

Evaluation, export and prediction of a checkpoint all start here. ``path`` may be a run
directory written by ``centernet train`` (its newest checkpoint), its ``best/`` directory,
or a ``ckpt-N`` prefix inside either.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from centernet_core import run_dir
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


def run_categories(directory: str, cfg) -> list[dict]:
    """The category table of a run: the run directory's own, else the metadata of the run's
    ``data.val`` / ``data.train`` datasets."""
    from centernet_core.data.metadata import load_metadata
    categories = run_dir.read_categories(directory)
    if categories is None:
        for pattern in (cfg.data.val, cfg.data.train):
            if pattern:
                try:
                    categories = load_metadata(pattern)["categories"]
                    break
                except DataError:
                    continue
    if not categories:
        raise DataError(f"no category table for the run in {directory}: {run_dir.METADATA_FILE} is "
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
    from centernet_core.modeling.model import build_model, freeze_for_inference, model_trackables

    cfg = run_dir.load_config(path, overrides)
    directory = run_dir.find(path)
    ckpt = run_dir.checkpoint_to_use(path)
    if ckpt is None:
        raise ConfigError(f"no checkpoint at {path}: pass a run directory of `centernet train` (with ckpt-N files) "
                          "or a ckpt-N prefix inside one")
    model = build_model(cfg, load_backbone_weights=False)  # the checkpoint holds every weight; every variable exists already: no call (and no conv kernel) before the restore
    try:
        tf.train.Checkpoint(**model_trackables(model)).restore(ckpt).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ConfigError(f"{ckpt} does not fit the model of {directory}/{run_dir.CONFIG_FILE} "
                          f"({str(e).splitlines()[0]})") from None
    freeze_for_inference(model)  # after the restore: the folds are taken from the restored weights
    return TrainedModel(model=model, cfg=cfg, categories=run_categories(directory, cfg), checkpoint=ckpt)
