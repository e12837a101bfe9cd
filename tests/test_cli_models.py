"""`ptaflow models` (list), `ptaflow models show NAME`, `ptaflow models check PATH`."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ptaflow import cli, models

GOOD = textwrap.dedent(
    """
    from ptaflow.priors import Uniform
    from ptaflow.spectra import powerlaw_h2omega
    name = "cli_test"
    description = "power law for the CLI test"
    parameters = {"log10_A": Uniform(-18, -11), "gamma": Uniform(0, 7)}
    def spectrum(f, log10_A, gamma):
        return powerlaw_h2omega(f, log10_A, gamma)
    """
)


def test_models_lists_builtins_priors_unavailable_and_presets(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.list_models():
        assert f"\n{name} (" in out
    assert "log10_Gmu      Uniform(-14, -6)" in out
    assert "super: SUPER" in out and "super.h5" in out
    assert "seed10: " + ", ".join(models.PRESETS["seed10"]) in out


def test_models_preset_listing(capsys):
    assert cli.main(["models", "--preset", "seed10"]) == 0
    out = capsys.readouterr().out
    assert out.count(" (2 parameters): ") == 10


def test_models_show_prints_file_and_priors(capsys):
    assert cli.main(["models", "show", "pt_bubble_2p"]) == 0
    out = capsys.readouterr().out
    assert "file: " + str(models.MODELS_DIR / "pt_bubble_2p.py") in out
    assert "log10_H_R      Fixed(-0.5)" in out and "log10_T_star   Uniform(-4, 4) [GeV]" in out


def test_models_show_unknown_name(capsys):
    assert cli.main(["models", "show", "meta_lss"]) == 1
    assert "Did you mean 'meta_ls'" in capsys.readouterr().err


def test_models_check_valid_file(tmp_path, capsys):
    path = tmp_path / "cli_test.py"
    path.write_text(GOOD)
    assert cli.main(["models", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"OK: {path.resolve()} is a valid model file" in out and "checked:" in out


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("return powerlaw_h2omega", "return -powerlaw_h2omega"), "negative"),
        (GOOD.replace('"gamma": Uniform(0, 7)', '"gama": Uniform(0, 7)'), "Did you mean 'gama'"),
    ],
)
def test_models_check_invalid_file_exits_1_with_the_message(tmp_path, capsys, text, message):
    path = tmp_path / "broken.py"
    path.write_text(text)
    assert cli.main(["models", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ptaflow: error: {path.resolve()}") and message in err


def test_models_check_exit_codes_from_the_shell(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("def spectrum", "def spectra"))
    run = [sys.executable, "-m", "ptaflow.cli", "models", "check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1 and "does not define `spectrum`" in fail.stderr


def test_models_check_of_a_file_that_exits_at_import(tmp_path, capsys):
    path = tmp_path / "exits.py"
    path.write_text(GOOD + "\nimport sys\nsys.exit(3)\n")
    assert cli.main(["models", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ptaflow: error: {path.resolve()}: executing the model file failed")
    assert "sys.exit(3)" in err


def test_models_check_finds_values_that_are_rare_on_the_prior(tmp_path, capsys):
    path = tmp_path / "rare.py"
    path.write_text(
        "import jax.numpy as jnp\n"
        + GOOD.replace(
            "return powerlaw_h2omega(f, log10_A, gamma)",
            "return jnp.where(gamma > 6.93, jnp.nan, powerlaw_h2omega(f, log10_A, gamma))",
        )
    )
    assert cli.main(["models", "check", str(path)]) == 1
    assert "of 16384 prior draws (" in capsys.readouterr().err
    path.write_text(GOOD)
    assert cli.main(["models", "check", str(path)]) == 0
    assert "at 16384 prior draws" in capsys.readouterr().out
