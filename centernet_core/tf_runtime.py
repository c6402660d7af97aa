"""Importing TensorFlow, with one clear line when it is not installed."""
from __future__ import annotations

import os

from centernet_core.errors import CenterNetError

INSTALL_HINT = ("TensorFlow is not installed; install the toolkit with a hardware extra: "
                "pip install 'centernet[cpu]' (or [gpu], [tpu])")


class MissingTensorFlow(CenterNetError):
    exit_code = 2


def require_tensorflow():
    """Return the ``tensorflow`` module or raise MissingTensorFlow naming the extra to install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MissingTensorFlow(f"{INSTALL_HINT} ({e})") from None
    return tf
