"""Importing TensorFlow: one clear line when it is not installed, and no start-up log noise."""
from __future__ import annotations

import os
import sys

from centernet_core.errors import CenterNetError

INSTALL_HINT = ("TensorFlow is not installed; install the toolkit with a hardware extra: "
                "pip install 'centernet[cpu]' (or [gpu], [tpu])")


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
