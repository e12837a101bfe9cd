"""Test configuration: float64 for the whole test run (PTA log-likelihoods are ~1e5)."""

from __future__ import annotations

import os
import pathlib

# Single-threaded OpenBLAS for JAX's CPU likelihoods (see ptaflow.threads), set before anything
# loads SciPy; subprocesses started by tests inherit it. A value in the environment is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

from ptaflow.devices import release_compiled_code  # noqa: E402

jax.config.update("jax_enable_x64", True)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Path of the read-only reference data beside the checkout (../shared/data).

    Tests that use this fixture need the full NG15 48-pulsar set; they fail loudly (never
    skip) when it is absent, since CI always provides it.
    """
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"this test needs the reference data at {SHARED_DATA} (../shared/data beside the "
            "checkout); it cannot run without it"
        )
    return SHARED_DATA


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Free each test module's compiled XLA executables when the module is done.

    The whole suite compiles thousands of functions in one process; without this it reaches
    the kernel's limit on memory mappings part-way through and the next compilation aborts
    (see `ptaflow.devices.release_compiled_code`).
    """
    yield
    release_compiled_code()
