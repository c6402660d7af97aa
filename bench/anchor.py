"""The side-by-side anchor: TF Model Garden's CenterNet (../shared/anchors), run in its own venv.

Build it once with `bash ../shared/anchors/setup_anchor_venv.sh`; the benchmarks call
`run_anchor` in the same job as their own measurements and report ratios.
"""
import json
import os
import subprocess

ANCHOR = ["/tmp/anchor-venv/bin/python", "/work/shared/anchors/anchor_modelgarden.py"]
ANCHOR_ENV = {"PYTHONPATH": "/tmp/anchor-venv/mg"}


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` (``env``: extra variables) and return the JSON object on its last output line."""
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_anchor(size: int, env: dict | None = None) -> dict:
    """Model Garden's HG-104 at ``size``: the JSON line its anchor script prints (``env``: extra variables)."""
    return run_json(ANCHOR + [str(size)], {**ANCHOR_ENV, **(env or {})})
