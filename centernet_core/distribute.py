"""Distribution strategy and numeric precision from a ``RuntimeConfig``.

``build_strategy`` turns ``runtime.strategy`` into a ``tf.distribute.Strategy``; every
failure to find the hardware a profile asks for is one line that says what to do
(usually: pick another profile). ``set_precision`` sets the Keras global dtype policy;
the matching optimizer wrapper (dynamic loss scaling for float16) lives in ``optim``.
Logical CPU devices for a CPU ``mirrored`` run must be configured before TensorFlow
initialises its devices, so ``build_strategy`` is the first TensorFlow call of a run.
"""
from __future__ import annotations

import json
import os
import socket

from centernet_core.errors import CenterNetError
from centernet_core.tf_setup import require_tensorflow

TPU_CONNECT_TIMEOUT_S = 10.0


class RuntimeSetupError(CenterNetError):
    """The hardware or cluster that the runtime profile asks for is not available."""

    exit_code = 2


def build_strategy(runtime_cfg):
    """The ``tf.distribute.Strategy`` for ``runtime_cfg.strategy``.

    default: ``tf.distribute.get_strategy()`` (one process, its default device).
    one_device: ``GPU:0``; fails fast when there is no GPU.
    mirrored: ``num_devices`` GPUs (0: all); without GPUs, ``num_devices`` logical CPUs
      (created here when TensorFlow has not initialised its devices yet).
    multi_worker: ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``.
    tpu: ``TPUStrategy`` on ``runtime_cfg.tpu`` (name, ``local`` or ``grpc://host:port``).
    """
    tf = require_tensorflow()
    kind = runtime_cfg.strategy
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "one_device":
        if not tf.config.list_physical_devices("GPU"):
            raise RuntimeSetupError("no GPU found; try --profile cpu")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(_mirrored_devices(tf, runtime_cfg.num_devices))
    if kind == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind == "tpu":
        return _tpu_strategy(tf, runtime_cfg.tpu)
    raise RuntimeSetupError(f"unknown runtime.strategy '{kind}'; valid: default, one_device, mirrored, "
                            "multi_worker, tpu")


def _mirrored_devices(tf, num_devices: int) -> list[str]:
    """Device names for MirroredStrategy: GPUs when present, else logical CPUs."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        n = num_devices or len(gpus)
        if n > len(gpus):
            raise RuntimeSetupError(f"runtime.num_devices={n} but only {len(gpus)} GPU(s) found; "
                                    f"try --set runtime.num_devices={len(gpus)}")
        return [f"/gpu:{i}" for i in range(n)]
    n = max(1, num_devices)
    cpus = tf.config.list_physical_devices("CPU")
    if n > 1 and len(cpus) < n:
        try:  # split the host CPU into n logical devices (only before device initialisation)
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
        except RuntimeError:
            pass  # already initialised: the count check below reports what exists
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < n:
        raise RuntimeSetupError(f"runtime.num_devices={n} but no GPU and only {len(logical)} CPU device(s) "
                                "are configured (TensorFlow was initialised first); try --profile cpu")
    return [f"/cpu:{i}" for i in range(n)]


def parse_tf_config(raw: str | None) -> dict:
    """Validate the ``TF_CONFIG`` JSON of a multi-worker job and return it as a dict."""
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise RuntimeSetupError(f"strategy multi_worker needs the TF_CONFIG environment variable; {example}")
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RuntimeSetupError(f"TF_CONFIG is not valid JSON ({e.msg} at char {e.pos}); {example}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise RuntimeSetupError(f"TF_CONFIG needs cluster.worker, a list of host:port; {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise RuntimeSetupError(f"TF_CONFIG needs task.type and task.index; {example}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not isinstance(task["index"], int) \
            or not 0 <= task["index"] < len(members):
        raise RuntimeSetupError(f"TF_CONFIG task {task['type']}:{task['index']} is not in its cluster; {example}")
    return spec


def _tpu_strategy(tf, address: str):
    """Connect to and initialise the TPU at ``address``; one line and no long hang if absent."""
    shown = address or "local"
    fail = RuntimeSetupError(f"no TPU found at {shown}; try --profile cpu")
    if address.startswith("grpc://") and not _reachable(address[len("grpc://"):]):
        raise fail
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError):
        raise fail from None
    except Exception as e:  # the resolver raises urllib errors when the name does not resolve
        if type(e).__module__.startswith(("urllib", "google", "googleapiclient", "http")):
            raise fail from None
        raise


def _reachable(host_port: str) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``TPU_CONNECT_TIMEOUT_S``."""
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TPU_CONNECT_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def is_chief(strategy) -> bool:
    """True for the process that writes shared outputs (checkpoints, logs, config)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0
                                                         and "chief" not in resolver.cluster_spec().as_dict())


def set_precision(policy: str) -> None:
    """Set the Keras global dtype policy (``float32``, ``mixed_bfloat16``, ``mixed_float16``).

    Layers built afterwards compute in the policy's compute dtype and keep float32
    variables; losses stay float32. Pair ``mixed_float16`` with
    ``optim.build_optimizer(..., precision=...)``, which adds dynamic loss scaling.
    """
    import keras

    valid = ("float32", "mixed_bfloat16", "mixed_float16")
    if policy not in valid:
        raise RuntimeSetupError(f"unknown runtime.precision '{policy}'; valid: {', '.join(valid)}")
    keras.mixed_precision.set_global_policy(policy)
