"""One code under test: the subprocess tests import the same package files as the in-process ones.

``python -m pytest`` from the repository root imports the source tree (the root is on
``sys.path``); the tests that start ``sys.executable`` in a subprocess (the CLI, several
replicas, preemption) run from elsewhere and import the *installed* package. With a stale
non-editable install one run would test two codes; the README's test command installs
editable (``pip install -e``), which this test checks.
"""
import os
import subprocess
import sys

import pytest

import centernet_cli
import centernet_core
import centernet_profiles


@pytest.mark.parametrize("package", [centernet_core, centernet_cli, centernet_profiles], ids=lambda p: p.__name__)
def test_subprocesses_import_the_same_package_as_the_tests(package):
    code = f"import {package.__name__} as p; print(p.__file__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # as the subprocess tests run them
    assert r.returncode == 0, r.stderr[-2000:]
    installed = os.path.realpath(r.stdout.strip().splitlines()[-1])
    assert installed == os.path.realpath(package.__file__), (
        f"a subprocess imports {installed}, the tests {package.__file__}: "
        "reinstall editable: pip install -e '.[cpu,export,dev]'")


def test_the_wheel_lists_every_package():
    """A regular (not editable) install ships only the packages pyproject.toml names: every
    folder with an ``__init__.py`` must be there (a missing ``tasks.keypoints`` broke
    `pip install .` -> `centernet demo` with a circular-import error)."""
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    setuptools = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["tool"]["setuptools"]
    folders = {v: k for k, v in setuptools["package-dir"].items()}  # cli -> centernet_cli
    found = set()
    for top in folders:
        for folder, _, files in os.walk(os.path.join(root, top)):
            if "__init__.py" in files:
                rel = os.path.relpath(folder, root).split(os.sep)
                found.add(".".join([folders[rel[0]], *rel[1:]]))
    assert found and found == set(setuptools["packages"]), sorted(found ^ set(setuptools["packages"]))
