"""Result keys and derived seeds: the values stored results and comparison records rely on."""

from __future__ import annotations

import hashlib
import json

from ptaflow import __version__
from ptaflow.identity import derived_seed, file_digest, result_key, settings_identity
from ptaflow.settings import CompareSettings, TrainConfig


def test_derived_seeds_keep_their_values():
    # Comparisons have seeded every model with these since their first records: a changed
    # value would give a resumed comparison other numbers than its stored models.
    assert derived_seed(0, "smbhb") == 2050961133
    assert derived_seed(7, "powerlaw") == 2870917214
    seeds = {derived_seed(base, name) for base in range(3) for name in ("a", "b", "c")}
    assert len(seeds) == 9 and all(0 <= s < 2**32 for s in seeds)


def test_a_result_key_hashes_its_inputs_as_comparison_records_do(tmp_path):
    model = tmp_path / "m.py"
    model.write_text("name = 'm'\n")
    settings = settings_identity(CompareSettings(seed=3))
    data = {"densities": "ng15", "n_freq": 14}
    # The key of a comparison's record, as written since its format 1.
    text = json.dumps(
        {
            "model_file": hashlib.sha256(model.read_bytes()).hexdigest(),
            "model": "m",
            "data": data,
            "settings": settings,
            "version": __version__,
            "format": 1,
        },
        sort_keys=True,
        default=str,
    )
    key = result_key(file_digest(model), "m", data, settings, fmt=1)
    assert key == hashlib.sha256(text.encode()).hexdigest()[:20]
    assert result_key(file_digest(model), "m", data, settings, fmt=1, replicate=0) != key
    model.write_text("name = 'm'  # edited\n")
    assert result_key(file_digest(model), "m", data, settings, fmt=1) != key


def test_the_training_device_count_does_not_enter_the_identity():
    one = CompareSettings(mode="full", train=TrainConfig(devices=None))
    four = CompareSettings(mode="full", train=TrainConfig(devices=4))
    assert settings_identity(one) == settings_identity(four)
    assert settings_identity(one) != settings_identity(CompareSettings(mode="full", seed=1))
    assert settings_identity(CompareSettings())["train"] is None
