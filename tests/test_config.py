from dataclasses import dataclass

import pytest

from gendm.agents.sac import SACConfig
from gendm.core.config import apply_overrides, describe, field_docs, parse_assignments
from gendm.core.errors import ConfigError


def test_field_docstrings_become_help_including_inherited_fields():
    docs = field_docs(SACConfig)
    assert docs["tau"].startswith("Polyak coefficient")
    assert docs["gamma"] == "Discount factor."  # from BaseConfig
    text = describe(SACConfig)
    assert "learning_rate=0.0003" in text and "Discount factor." in text


def test_overrides_are_parsed_to_field_types():
    cfg = apply_overrides(
        SACConfig(),
        [
            "learning_rate=1e-3",
            "hidden=64,64",
            "autotune=false",
            "target_entropy=-2",
            "critic_learning_rate=none",
            "batch_size=1_024",
        ],
    )
    assert cfg.learning_rate == 1e-3 and cfg.hidden == (64, 64) and cfg.autotune is False
    assert cfg.target_entropy == -2.0 and cfg.critic_learning_rate is None and cfg.batch_size == 1024
    assert apply_overrides(SACConfig(), {"batch_size": 64.0}).batch_size == 64  # TOML floats that are whole


def test_unknown_field_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"no field 'learning_rat'.*Did you mean: learning_rate"):
        apply_overrides(SACConfig(), ["learning_rat=1"])


@pytest.mark.parametrize(
    "pair, field",
    [
        ("batch_size=abc", "batch_size"),
        ("autotune=maybe", "autotune"),
        ("batch_size=1.5", "batch_size"),
        ("precision=fp8", "precision"),
    ],
)
def test_bad_values_name_the_field(pair, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(SACConfig(), [pair])


def test_validation_runs_on_construction():
    with pytest.raises(ConfigError, match="gamma"):
        SACConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="tau"):
        apply_overrides(SACConfig(), ["tau=0"])


def test_assignment_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["learning_rate"])


def test_literal_like_validation_in_custom_dataclass():
    @dataclass
    class C:
        x: int = 1
        """An int."""

    assert apply_overrides(C(), {"x": "3"}).x == 3
