"""The installable package: wheel contents, the public API, no import-time side effects."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

import ptaflow
from ptaflow import cli
from ptaflow.errors import ParameterError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_python(code: str, **env_changes: str | None) -> str:
    """Run `code` in a fresh interpreter; env_changes: variables to set (None: remove)."""
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- the wheel ---------------------------------------------------------------------------------


def _files(folder: pathlib.Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_wheel_carries_every_module_the_models_and_the_data(tmp_path):
    # Built from a copy of the sources: setuptools reuses build/ of the checkout, whose stale
    # files would end up in the wheel.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ptaflow", "models", "data"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("ptaflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = {f"ptaflow/{f}" for f in _files(REPO / "ptaflow")}
    expected |= {f"ptaflow/_models/{f}" for f in _files(REPO / "models")}
    expected |= {f"ptaflow/_data/{f}" for f in _files(REPO / "data")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert "ptaflow/_models/powerlaw.py" in names
    assert "ptaflow/_data/ng15_ceffyl_hd/density.npy" in names
    assert not [n for n in names if n.startswith(("models/", "data/"))]  # nothing top-level


def test_a_source_checkout_uses_the_repository_folders():
    from ptaflow import _paths, models

    assert _paths.DATA_DIR == REPO / "data"
    assert models.MODELS_DIR == _paths.MODELS_DIR == REPO / "models"
    assert {"powerlaw", "smbhb"} <= set(models.list_models())


# --- the public API ----------------------------------------------------------------------------


def test_every_public_name_is_the_object_of_its_home_module():
    assert len(set(ptaflow.__all__)) == len(ptaflow.__all__)
    assert set(ptaflow.__all__) == set(ptaflow._HOME)
    for name in ptaflow.__all__:
        home = importlib.import_module(ptaflow._HOME[name])
        obj = getattr(ptaflow, name)
        assert obj is getattr(home, name), name
        assert getattr(obj, "__module__", home.__name__) == home.__name__, name
        assert name in dir(ptaflow)
    namespace: dict = {}
    exec("from ptaflow import *", namespace)
    assert set(ptaflow.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ptaflow.not_a_name  # noqa: B018


def test_compare_is_the_function_however_the_module_was_first_imported():
    out = _run_python(
        """
        import sys
        from ptaflow.compare import CompareSettings   # the submodule first
        import ptaflow
        import ptaflow.compare as via_import
        from ptaflow import compare
        module = sys.modules["ptaflow.compare"]
        assert ptaflow.compare is module.compare is via_import is compare
        assert ptaflow.CompareSettings is CompareSettings is module.CompareSettings
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_import_ptaflow_is_light_and_leaves_the_environment_alone():
    out = _run_python(
        """
        import json, os, sys
        before = dict(os.environ)
        import ptaflow
        print(json.dumps({
            "env_unchanged": dict(os.environ) == before,
            "openblas": os.environ.get("OPENBLAS_NUM_THREADS"),
            "loaded": sorted(m for m in ("jax", "scipy", "numpy") if m in sys.modules),
        }))
        """,
        OPENBLAS_NUM_THREADS=None,
    )
    result = json.loads(out)
    assert result == {"env_unchanged": True, "openblas": None, "loaded": []}


# --- OpenBLAS threads --------------------------------------------------------------------------


def test_limit_blas_threads_limits_openblas_and_restores_it():
    out = _run_python(
        """
        import json
        from threadpoolctl import threadpool_info
        import ptaflow

        def openblas():
            return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                    if i["internal_api"] == "openblas"}

        limits = ptaflow.limit_blas_threads()   # before SciPy is loaded: it loads it itself
        limited = openblas()
        limits.restore_original_limits()
        default = openblas()
        with ptaflow.limit_blas_threads():
            inside = openblas()
        print(json.dumps({"limited": limited, "default": default, "inside": inside,
                          "after": openblas()}))
        """,
        OPENBLAS_NUM_THREADS=None,
    )
    result = json.loads(out)
    scipy_libs = [p for p in result["limited"] if "scipy_openblas-" in p]
    assert scipy_libs, result  # SciPy's OpenBLAS (the one jaxlib's CPU kernels call)
    assert set(result["limited"].values()) == {1}
    assert set(result["inside"].values()) == {1}
    assert result["after"] == result["default"]
    if (os.cpu_count() or 1) > 1:
        assert max(result["default"].values()) > 1


def test_limit_blas_threads_checks_its_argument():
    with pytest.raises(ParameterError, match="positive integer"):
        ptaflow.limit_blas_threads(0)
    with pytest.raises(ParameterError, match="positive integer"):
        ptaflow.limit_blas_threads(1.5)


def test_the_command_line_runs_openblas_single_threaded_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    cli._single_threaded_blas()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    cli._single_threaded_blas()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    from threadpoolctl import threadpool_info

    assert {i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"} == {1}


def test_the_command_line_loads_no_blas_before_it_limits_it():
    # OpenBLAS reads OPENBLAS_NUM_THREADS once, when NumPy or SciPy loads it: the modules the
    # `ptaflow` command imports before main() sets it must load neither (nor JAX).
    out = _run_python(
        """
        import sys
        import ptaflow.cli
        print(sorted(m for m in ("jax", "numpy", "scipy") if m in sys.modules))
        """
    )
    assert out.strip() == "[]"
