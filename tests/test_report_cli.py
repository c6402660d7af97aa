"""`centernet eval --report`: the report of a checkpoint and of a results file, through the CLI."""
import json
import os

from test_cli_foundation import run_cli
from test_evaluate import run_dir  # noqa: F401  (the tiny trained run, a fixture)


def test_eval_report_of_a_checkpoint_and_of_its_results_file(run_dir, shapes_dataset, tmp_path):
    annotations = os.path.join(shapes_dataset, "instances_val.json")
    results = str(tmp_path / "results.json")
    report = str(tmp_path / "report")
    r = run_cli("eval", "--ckpt", run_dir, "--annotations", annotations, "--per-class", "--output", results,
                "--report", report, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"report: {report}/index.html" in r.stdout
    data = json.load(open(os.path.join(report, "report.json")))
    names = {c["name"] for c in json.load(open(annotations))["categories"]}
    assert {row["name"] for row in data["classes"]} == names
    # the galleries show the records' pictures with the model's heatmap beside them
    assert os.path.isfile(os.path.join(report, "index.html")) and os.listdir(os.path.join(report, "gallery"))
    # the same results file, evaluated without a model, gives the same per-class numbers
    again = str(tmp_path / "again")
    r = run_cli("eval", "--detections", results, "--annotations", annotations, "--report", again,
                "--data", os.path.join(shapes_dataset, "val-*.tfrecord"), timeout=600)
    assert r.returncode == 0, r.stderr
    other = json.load(open(os.path.join(again, "report.json")))
    key = lambda rows: sorted((row["name"], row["AP"]) for row in rows)  # noqa: E731
    assert key(other["classes"]) == key(data["classes"])
