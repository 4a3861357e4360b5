import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from gendm.agents.base import AgentConfig, BaseConfig, OfflineConfig
from gendm.agents.critics import IQLCriticConfig
from gendm.agents.idql import IDQLConfig
from gendm.agents.iql import IQLConfig
from gendm.agents.sac import SACConfig
from gendm.agents.vgps import VGPSConfig
from gendm.core.config import (
    Config,
    apply_overrides,
    check,
    describe,
    field,
    field_docs,
    field_rules,
    parse_assignments,
)
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


# ------------------------------------------------------------------ constraints declared beside the field
@dataclass
class Demo(Config):
    rate: float = field(0.1, gt=0, le=1)
    """A rate."""
    steps: int = field(4, ge=1)
    """Steps."""
    mode: str = field("fast", choices=("fast", "exact"))
    """Mode."""
    scale: float | None = field(None, gt=0)
    """Optional scale."""
    widths: tuple[int, ...] = field((8, 8), ge=1)
    """Widths."""
    seed: int = 0
    """No rule, but an int."""


@dataclass
class DemoChild(Demo):
    steps: int = 8  # redeclared with a new default: the base class's rule still holds
    """More steps."""
    rate: float = field(0.5, ge=0.5, lt=1)  # redeclared with a rule: it replaces the base's
    """A higher rate."""
    low: float = 0.0
    """Lower bound."""
    high: float = 1.0
    """Upper bound."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.low < self.high, "low", "must be < high.")


@dataclass(frozen=True)
class FrozenDemo(Config):
    n: int = field(1, ge=0)
    """A count."""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 0.0}, r"Field 'rate': must be in \(0, 1\], got 0\.0\."),
        ({"rate": 1.5}, r"Field 'rate': must be in \(0, 1\], got 1\.5\."),
        ({"steps": 0}, r"Field 'steps': must be >= 1, got 0\."),
        ({"mode": "fats"}, r"Field 'mode': must be one of fast, exact, got 'fats'\. Did you mean: fast\?"),
        ({"scale": -1.0}, r"Field 'scale': must be > 0 or None, got -1\.0\."),
        ({"widths": (8, 0)}, r"Field 'widths': every item must be >= 1, got \(8, 0\)\."),
        ({"steps": 2.5}, r"Field 'steps': expected an integer, got 2\.5\."),
        ({"steps": True}, r"Field 'steps': expected an integer, got True\."),
        ({"seed": "0"}, r"Field 'seed': expected an integer, got '0'\."),
        ({"rate": "0.5"}, r"Field 'rate': expected a number, got '0\.5'\."),
        ({"rate": float("nan")}, r"Field 'rate': must be in \(0, 1\], got nan\."),
    ],
)
def test_declared_constraints_are_checked_on_construction_naming_field_and_allowed_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Demo(**kwargs)


def test_valid_values_pass_and_numbers_of_other_types_are_accepted():
    c = Demo(rate=1, steps=np.int64(3), scale=None, widths=(1,), seed=np.int32(7))
    assert (c.rate, c.steps, c.scale, c.widths) == (1, 3, None, (1,))
    assert Demo(scale=2.0).scale == 2.0 and Demo(rate=np.float32(0.5)).rate == 0.5


def test_constraints_run_after_replace_and_overrides_and_on_frozen_configs():
    with pytest.raises(ConfigError, match="'rate'"):
        dataclasses.replace(Demo(), rate=2.0)
    with pytest.raises(ConfigError, match=r"Field 'mode': must be one of fast, exact"):
        apply_overrides(Demo(), ["mode=slow"])
    assert apply_overrides(Demo(), ["mode=exact", "widths=4,4"]) == Demo(mode="exact", widths=(4, 4))
    with pytest.raises(ConfigError, match=r"Field 'n': must be >= 0, got -1\."):
        FrozenDemo(n=-1)


def test_subclasses_keep_inherited_rules_replace_redeclared_ones_and_add_cross_field_checks():
    assert DemoChild().steps == 8
    with pytest.raises(ConfigError, match=r"Field 'steps': must be >= 1, got 0\."):
        DemoChild(steps=0)
    DemoChild(rate=0.9)
    with pytest.raises(ConfigError, match=r"Field 'rate': must be in \[0\.5, 1\), got 0\.2\."):
        DemoChild(rate=0.2)
    with pytest.raises(ConfigError, match=r"Field 'low': must be < high\."):
        DemoChild(low=2.0)
    rules = field_rules(DemoChild)
    assert set(rules) == {"rate", "steps", "mode", "scale", "widths"} and rules["rate"].ge == 0.5


def test_help_shows_each_fields_constraint():
    text = describe(Demo)
    assert "rate=0.1  (float, in (0, 1])" in text and "steps=4  (int, >= 1)" in text
    assert "mode='fast'  (str, one of fast, exact)" in text and "seed=0  (int)\n" in text
    iql_help = describe(IQLConfig)
    assert "expectile=0.7  (float, in (0, 1))" in iql_help
    assert "precision='fp32'  (str, one of fp32, bf16, auto)" in iql_help


def test_a_rule_takes_one_bound_per_side():
    with pytest.raises(TypeError, match="at most one lower bound"):
        field(1.0, gt=0, ge=0)


# ------------------------------------------------------------------------ the shared config parts
def test_offline_and_online_configs_share_one_base():
    assert issubclass(OfflineConfig, AgentConfig) and issubclass(BaseConfig, AgentConfig)
    shared = {f.name for f in dataclasses.fields(AgentConfig)}
    assert shared == {"gamma", "normalize_obs", "compile", "precision"}
    assert {f.name for f in dataclasses.fields(OfflineConfig)} == shared | {"batch_size"}
    assert {f.name for f in dataclasses.fields(BaseConfig)} == shared | {"num_envs", "normalize_reward"}
    for cls in (OfflineConfig, BaseConfig):
        with pytest.raises(ConfigError, match=r"Field 'gamma': must be in \[0, 1\], got 1\.5\."):
            cls(gamma=1.5)
        with pytest.raises(ConfigError, match=r"Field 'precision': must be one of fp32, bf16, auto"):
            cls(precision="fp16")


@pytest.mark.parametrize("cls", [IQLConfig, IDQLConfig, VGPSConfig])
def test_iql_critic_fields_are_declared_once(cls):
    assert issubclass(cls, IQLCriticConfig)
    mine = {f.name: f.default for f in dataclasses.fields(IQLCriticConfig)}
    assert mine == {
        "critic_learning_rate": 3e-4,
        "num_critics": 2,
        "tau": 0.005,
        "expectile": 0.7,
        "return_scale": None,
    }
    own = vars(cls)["__annotations__"]
    assert not set(mine) & set(own)  # no method repeats them
    with pytest.raises(ConfigError, match=r"Field 'expectile': must be in \(0, 1\), got 1\.0\."):
        cls(expectile=1.0)


def test_every_config_with_declared_rules_is_validated():
    """A dataclass whose fields declare rules must derive from Config, or nothing would check them."""
    import gendm.train  # noqa: F401  (imports and registers every method)

    unchecked = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("gendm."):
            continue
        for obj in vars(module).values():
            mine = isinstance(obj, type) and obj.__module__ == module.__name__
            if mine and dataclasses.is_dataclass(obj) and field_rules(obj) and not issubclass(obj, Config):
                unchecked.append(obj.__qualname__)
    assert unchecked == []
