"""The side-by-side anchor: TF Model Garden's CenterNet (../shared/anchors), run in its own venv.

Build it once with `bash ../shared/anchors/setup_anchor_venv.sh`; the benchmarks call
`run_anchor` in the same job as their own measurements and report ratios.

Where things are: ``CENTERNET_SHARED`` (default: ``../shared`` beside the repository) holds
the anchor scripts; ``ANCHOR_VENV`` and ``UL_VENV`` (the variables the setup scripts read;
defaults /tmp/anchor-venv and /tmp/ul-venv) are the side venvs.
"""
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CENTERNET_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
ANCHOR_VENV = os.environ.get("ANCHOR_VENV", "/tmp/anchor-venv")
UL_VENV = os.environ.get("UL_VENV", "/tmp/ul-venv")
ANCHOR_PYTHON = os.path.join(ANCHOR_VENV, "bin", "python")
ANCHOR = [ANCHOR_PYTHON, os.path.join(SHARED, "anchors", "anchor_modelgarden.py")]
ANCHOR_ENV = {"PYTHONPATH": os.path.join(ANCHOR_VENV, "mg")}


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` (``env``: extra variables) and return the JSON object on its last output line."""
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_anchor(size: int, env: dict | None = None) -> dict:
    """Model Garden's HG-104 at ``size``: the JSON line its anchor script prints (``env``: extra variables)."""
    return run_json(ANCHOR + [str(size)], {**ANCHOR_ENV, **(env or {})})
