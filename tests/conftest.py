"""Shared fixtures.

``shapes_dataset``: one small synthetic set written once per test session by the same
code as ``centernet prepare shapes --train 24 --val 8 --size 128 --seed 0``. The
returned directory holds ``images/{train,val}/*.jpg``, ``instances_{train,val}.json``
(COCO ids 1 circle, 2 square, 3 triangle), ``{train,val}-00000-of-00001.tfrecord``,
``{train,val}.meta.json`` and ``{train,val}.report.json``.
"""
import pytest


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> str:
    from centernet_core.data.shapes import make_shapes_dataset

    out = str(tmp_path_factory.mktemp("shapes"))
    make_shapes_dataset(out, train=24, val=8, size="128", seed=0, workers=1, shards=1)
    return out
