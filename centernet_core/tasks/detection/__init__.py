"""CenterNet object detection: centre heatmap, size and offset (``task.DetectionTask``)."""
from centernet_core.tasks.detection.task import DetectionTask

__all__ = ["DetectionTask"]
