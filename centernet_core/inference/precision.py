"""CPU inference precision for checkpoints: ``eval.precision`` auto | float32 | bfloat16.

``auto`` is bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX-BF16 in
``/proc/cpuinfo``), float32 elsewhere. bfloat16 runs the model under Keras's
``mixed_bfloat16`` policy (float32 variables, bfloat16 convolutions); decoding is float32
(``detect.head_maps`` casts the maps). Exports run as they were written.
"""
from __future__ import annotations

NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises native bfloat16 arithmetic."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_FLAGS)


def resolve(choice: str) -> tuple[str, str]:
    """(``float32`` | ``bfloat16``, a one-line reason) for ``auto``, ``float32`` or ``bfloat16``."""
    if choice != "auto":
        return choice, f"precision {choice} (asked)"
    if cpu_has_bf16():
        return "bfloat16", "precision auto: bfloat16 (this CPU has native bf16)"
    return "float32", "precision auto: float32 (no native bf16 on this CPU)"


def apply(choice: str) -> str:
    """Set the Keras policy for models built from now on; returns the one-line reason."""
    import keras
    dtype, why = resolve(choice)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    return why
