"""The keypoints task: CenterNet's multi-person pose estimation (``model.task: keypoints``)."""
from centernet_core.tasks.keypoints import task  # noqa: F401  (registration)
