"""`centernet demo`: prepare shapes -> train -> eval -> export -> predict, on a CPU in minutes."""
from __future__ import annotations

import time
from typing import Optional

import typer

from centernet_cli.common import console
from centernet_cli.eval import metrics_table, per_class_table


def demo(
    workdir: str = typer.Option("centernet-demo", "--workdir", help="Directory for the dataset, run, exports and pictures."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the shapes-tiny preset's)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Log lines only, no progress bars."),
):
    """The toolkit end to end on a synthetic dataset: under 10 minutes on two CPU cores.

    Example: centernet demo --workdir centernet-demo
    """
    from centernet_core.demo import run_demo

    start = time.perf_counter()
    stage = {"n": 0}

    def announce(text: str) -> None:
        stage["n"] += 1
        console.print(f"[bold cyan][{stage['n']}/5][/] {text}", highlight=False)

    result = run_demo(workdir, steps=steps, on_stage=announce, console=console, show_progress=not no_progress)
    console.print(metrics_table(result.metrics, title="COCO box metrics on the 100 val pictures"))
    console.print(per_class_table(result.metrics["per_class"]))
    checks = ", ".join(f"{fmt} {'ok' if c['ok'] else 'MISMATCH'}" for fmt, c in result.export["checks"].items())
    p = result.paths
    console.print(f"exports: {p['export']} ({checks})", highlight=False)
    console.print(f"pictures with boxes: {p['predictions']} ({len(result.predictions.images)} images)", highlight=False)
    console.print(f"done in {(time.perf_counter() - start) / 60:.1f} min. Next: centernet predict YOUR_IMAGES "
                  f"--model {p['export']}", highlight=False)
