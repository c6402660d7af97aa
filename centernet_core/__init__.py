"""CenterNet ("Objects as Points") for TensorFlow 2 / Keras 3: all logic lives here."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("centernet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
