"""Settings classes: one rule per field, messages that name Class.field=value, no JAX."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ptaflow.errors import ParameterError
from ptaflow.settings import (
    COMPARE_RULES,
    FLOW_RULES,
    TRAIN_RULES,
    CompareSettings,
    FlowConfig,
    TrainConfig,
)

#: One value per rule that the rule refuses: (class, field, value).
BAD = [
    (FlowConfig, "family", "bnaf"),
    (FlowConfig, "flow_layers", 0),
    (FlowConfig, "nn_width", 0),
    (FlowConfig, "nn_depth", -1),
    (FlowConfig, "knots", 0),
    (FlowConfig, "interval", 0.0),
    (TrainConfig, "max_steps", -1),
    (TrainConfig, "num_samples", 0),
    (TrainConfig, "learning_rate", 0.0),
    (TrainConfig, "warmup_steps", -1),
    (TrainConfig, "final_lr_fraction", 1.5),
    (TrainConfig, "clip_norm", 0.0),
    (TrainConfig, "temper_steps", -1),
    (TrainConfig, "beta0", 0.0),
    (TrainConfig, "patience", 0),
    (TrainConfig, "min_delta", -0.1),
    (TrainConfig, "smoothing", 0.0),
    (TrainConfig, "init", "map"),
    (TrainConfig, "prior_draws", 0),
    (TrainConfig, "prior_ess", 0.0),
    (TrainConfig, "laplace_starts", 0),
    (TrainConfig, "laplace_steps", -1),
    (TrainConfig, "init_min_sd", -1.0),
    (TrainConfig, "checkpoint_every", 0),
    (TrainConfig, "refine_rounds", -1),
    (TrainConfig, "refine_pool", 0),
    (TrainConfig, "refine_steps", 0),
    (TrainConfig, "refine_batch", 0),
    (TrainConfig, "refine_learning_rate", 0.0),
    (TrainConfig, "refine_patience", -1),
    (TrainConfig, "refine_target_ess", 1.5),
    (TrainConfig, "refine_anneal_ess", 1.0),
    (TrainConfig, "surrogate", "hd"),
    (TrainConfig, "devices", 0),
    (CompareSettings, "mode", "fast"),
    (CompareSettings, "correlation", "dipole"),
    (CompareSettings, "n_rn", 0),
    (CompareSettings, "n_gw", 0),
    (CompareSettings, "n_freq", 0),
    (CompareSettings, "n_flow_samples", 0),
    (CompareSettings, "exact", "smc"),
    (CompareSettings, "n_chains", 3),
    (CompareSettings, "n_per_chain", 0),
    (CompareSettings, "neutra_warmup", -1),
    (CompareSettings, "harmonic_flow", "new"),
    (CompareSettings, "temperature", 1.0),
]


def test_every_rule_has_a_refused_value_here():
    for cls, rules in ((FlowConfig, FLOW_RULES), (TrainConfig, TRAIN_RULES)):
        assert {f for c, f, _ in BAD if c is cls} == set(rules), cls.__name__
    assert {f for c, f, _ in BAD if c is CompareSettings} == set(COMPARE_RULES)


@pytest.mark.parametrize("cls, field, value", BAD, ids=[f"{c.__name__}.{f}" for c, f, _ in BAD])
def test_a_refused_value_is_named_with_its_class_and_field(cls, field, value):
    match = rf"^{cls.__name__}\.{field}={re.escape(repr(value))}: expected \S"
    with pytest.raises(ParameterError, match=match):
        cls(**{field: value})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TrainConfig(max_steps="300"), r"^TrainConfig\.max_steps='300': expected an int"),
        (lambda: TrainConfig(devices="gpu"), r"^TrainConfig\.devices='gpu': expected None, 'all'"),
        (lambda: TrainConfig(devices=True), r"^TrainConfig\.devices=True: expected None, 'all'"),
        (lambda: TrainConfig(devices=3), r"TrainConfig\.devices=3 does not divide num_samples"),
        (lambda: TrainConfig(max_steps=0, refine_rounds=0), r"train nothing"),
        (lambda: CompareSettings(n_rn=10), r"^CompareSettings\.n_rn=10 applies to mode='full'"),
    ],
)
def test_values_of_the_wrong_kind_and_inconsistent_fields_are_refused(make, match):
    with pytest.raises(ParameterError, match=match):
        make()


def test_the_defaults_are_valid_and_full_mode_fills_in_its_own():
    assert TrainConfig(devices="all") and TrainConfig(devices=2).devices == 2
    refit, full = CompareSettings(), CompareSettings(mode="full")
    assert refit.train is None and refit.flow is None and refit.temperature is None
    assert (full.train, full.flow) == (TrainConfig(init="prior"), FlowConfig())
    assert (full.harmonic_flow, full.temperature) == ("posterior", 0.7)
    # Refit mode: the temperature follows each model's dimension (`refit_configs`).
    assert CompareSettings(harmonic_flow="posterior").temperature is None
    assert CompareSettings(mode="full", pulsars=["a", "b"]).pulsars == ("a", "b")


def test_the_former_homes_give_the_same_classes():
    from ptaflow import compare, flows, settings

    assert flows.FlowConfig is settings.FlowConfig and flows.TrainConfig is settings.TrainConfig
    assert sys.modules["ptaflow.compare"].CompareSettings is settings.CompareSettings
    assert compare is sys.modules["ptaflow.compare"].compare


def test_settings_identity_and_batch_specs_import_without_jax():
    code = (
        "import sys, ptaflow.settings, ptaflow.identity, ptaflow.batch.spec\n"
        "print(sorted(m for m in ('jax', 'numpy', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
