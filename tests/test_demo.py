"""The demo: every stage runs and leaves its files; the full run reaches AP50 >= 0.9 (slow)."""
import json
import os

import pytest

from centernet_core.demo import run_demo
from test_evaluate import cli


def test_demo_cli_runs_every_stage(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert cli(["demo", "--workdir", str(workdir), "--steps", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for stage in ("[1/5] prepare", "[2/5] train", "[3/5] eval", "[4/5] export", "[5/5] predict", "AP50"):
        assert stage in out
    assert len(json.loads((workdir / "results.json").read_text())) == 100 * 100  # 100 val pictures x 100
    export = json.loads((workdir / "export" / "export.json").read_text())
    assert all(check["ok"] for check in export["checks"].values())
    drawn = [n for n in os.listdir(workdir / "predictions") if n.endswith(".jpg")]
    assert len(drawn) == 6


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_full_demo_reaches_ap50_of_0_9(tmp_path):
    result = run_demo(str(tmp_path / "demo"), show_progress=False)
    assert result.metrics["AP50"] >= 0.9, result.metrics
