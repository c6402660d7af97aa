"""Importing TensorFlow: one clear line when it is not installed, and no start-up log noise."""
from __future__ import annotations

import os
import sys

from centernet_core.errors import CenterNetError

INSTALL_HINT = ("TensorFlow is not installed; install the toolkit with a hardware extra: "
                "pip install 'centernet[cpu]' (or [gpu], [tpu])")


# oneDNN reads this once, when the process creates its first convolution or matmul kernel.
WEIGHT_CACHE_ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"


class MissingTensorFlow(CenterNetError):
    exit_code = 2


def require_tensorflow(quiet: bool = False):
    """Return the ``tensorflow`` module or raise MissingTensorFlow naming the extra to install.

    ``quiet`` silences what TensorFlow's C++ runtime writes to the stderr file descriptor
    while it is first imported (TF 2.21 logs its oneDNN notice before absl reads
    TF_CPP_MIN_LOG_LEVEL), so a CLI error stays the only line on stderr.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if quiet and "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            return require_tensorflow(quiet=False)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MissingTensorFlow(f"{INSTALL_HINT} ({e})") from None
    return tf


def cache_inference_weights() -> bool:
    """Let oneDNN reorder each convolution's weights once per process and reuse them.

    By default oneDNN convolves with the weights as TensorFlow stores them (HWIO), since
    they may change between calls; with ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` every
    convolution and matmul kernel keeps its first call's weights in oneDNN's blocked layout
    and its faster kernels (measured in docs/benchmarks.md, "weight cache"). The price is
    that a kernel never sees new weights:
    only for processes that restore weights once and then only infer (``centernet eval``,
    ``centernet predict``), never where training or weight loading follows a first call.

    Must run before TensorFlow is imported; returns whether the cache is on (False when
    TensorFlow is already loaded, or the variable was set to something else by the user).
    """
    if "tensorflow" in sys.modules:
        return os.environ.get(WEIGHT_CACHE_ENV) == "1"
    os.environ.setdefault(WEIGHT_CACHE_ENV, "1")
    return os.environ[WEIGHT_CACHE_ENV] == "1"
