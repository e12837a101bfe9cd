"""The README's Python examples run as written (from the top folder of the checkout).

Each ```python block is executed in order in one namespace, as a reader would paste them into
one session, in a scratch folder that sees the checkout's `data/`. Blocks that fit full
posteriors or compare models get smaller sizes (pulsars, models, draws, steps): every
substitution must find its text, so an edited example cannot silently run at full size or
not at all. Two blocks are not run (their reasons are listed below); of those, the test
checks that they parse and that their imports exist.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: Sizes only: the example's calls and arguments stay, their sizes shrink.
SMALLER = {
    "post = make_posterior(": [
        ('pulsars=10, correlation="hd")', 'pulsars=2, correlation="hd")'),
        (
            "fit_posterior(post, seed=0)",
            "fit_posterior(post, seed=0, train_config=TrainConfig(max_steps=200, "
            "laplace_starts=4, laplace_steps=100, refine_rounds=2, refine_pool=1024), "
            "n_samples=2000)",
        ),
        (
            'compare("seed10", settings=CompareSettings(mode="refit")',
            'compare(["powerlaw", "smbhb"], settings=CompareSettings(mode="refit", '
            "n_flow_samples=2000, n_chains=4, n_per_chain=250)",
        ),
    ],
}
#: Imports the smaller sizes need.
PRELUDE = {"post = make_posterior(": "from ptaflow.flows import TrainConfig\n"}

#: Blocks not run, by a line they contain, with the reason.
NOT_RUN = {
    "use_cpu_cores()": "use_cpu_cores() must run before JAX starts, in a fresh process, and "
    "the block runs NUTS on the 22-parameter HD posterior (tens of minutes on a CPU)",
    "run_local(job": "runs the 60 tasks of examples/ng15_sources.toml, one worker per GPU "
    "(hours without GPUs)",
}
#: Blocks that fit a full-mode posterior or use that fit: a minute or more on two CPU cores.
SLOW = ("post = make_posterior(", "d = fit.diagnostics()")


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def _find(table: dict, code: str):
    return next((value for key, value in table.items() if key in code), None)


def _prepared(code: str) -> str:
    for old, new in _find(SMALLER, code) or ():
        assert old in code, f"the README example no longer contains {old!r}; update SMALLER"
        code = code.replace(old, new)
    return (_find(PRELUDE, code) or "") + code


def _params():
    params = []
    for i, code in enumerate(_blocks()):
        marks = []
        if _find(NOT_RUN, code) is None and _find({k: True for k in SLOW}, code):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(i, id=f"block{i}-{code.splitlines()[0][:30]}", marks=marks))
    return params


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One namespace for the README's blocks, and a scratch folder that sees data/."""
    folder = tmp_path_factory.mktemp("readme")
    os.symlink(REPO / "data", folder / "data")
    return {"folder": folder, "namespace": {"__name__": "readme"}, "done": set()}


def test_every_block_is_found_and_every_rule_applies():
    blocks = _blocks()
    assert len(blocks) >= 4
    for table in (SMALLER, NOT_RUN, PRELUDE):
        for key in table:
            assert sum(key in code for code in blocks) == 1, f"{key!r}: expected in one block"


@pytest.mark.parametrize("index", _params())
def test_readme_example_runs(index, session, monkeypatch):
    monkeypatch.chdir(session["folder"])
    blocks = _blocks()
    if _find(NOT_RUN, blocks[index]) is not None:
        # Not run (see NOT_RUN): the block must still be valid Python whose imports exist.
        tree = ast.parse(blocks[index], f"README.md python block {index}")
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert imports, "a block that is not run should at least show its imports"
        exec(compile(ast.Module(imports, type_ignores=[]), "imports", "exec"), {})
        return
    # Earlier blocks first (their names are used later), as a reader runs them.
    for i in range(index + 1):
        if i in session["done"] or _find(NOT_RUN, blocks[i]) is not None:
            continue
        exec(
            compile(_prepared(blocks[i]), f"README.md python block {i}", "exec"),
            session["namespace"],
        )
        session["done"].add(i)
