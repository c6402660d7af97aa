"""Tasks: what the model predicts. One package per task, registered by name (see ``base``)."""
from centernet_core.tasks.base import HeadSpec, Task, build_task, register_task, task_names
from centernet_core.tasks import detection  # noqa: F401  (registration)
from centernet_core.tasks import keypoints  # noqa: F401  (registration)

__all__ = ["HeadSpec", "Task", "build_task", "register_task", "task_names"]
