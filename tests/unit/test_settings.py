"""Settings come from BATCOMPUTER_* variables, validated with clear messages."""

import pytest

from batcomputer.errors import ConfigurationError
from batcomputer.settings import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.registry == "var/registry"
    assert settings.api_port == 8000
    assert settings.redis_url is None


def test_reads_and_parses_variables() -> None:
    settings = Settings.from_env({"BATCOMPUTER_REGISTRY": "abfs://models/prod", "BATCOMPUTER_API_PORT": "9001",
                                  "BATCOMPUTER_REGISTRY_OPTIONS": '{"account_name": "x"}',
                                  "BATCOMPUTER_BATCH_WINDOW_MS": "3.5"})
    assert settings.registry == "abfs://models/prod"
    assert settings.api_port == 9001
    assert settings.registry_options == {"account_name": "x"}
    assert settings.batch_window_ms == 3.5


@pytest.mark.parametrize(("name", "value", "message"), [
    ("BATCOMPUTER_API_PORT", "eighty", "BATCOMPUTER_API_PORT='eighty' is not an integer"),
    ("BATCOMPUTER_MAX_ATTEMPTS", "0", "must be greater than zero"),
    ("BATCOMPUTER_REGISTRY_OPTIONS", "[1]", "must be a JSON object"),
    ("BATCOMPUTER_REGISTRY", "  ", "must not be empty"),
    ("BATCOMPUTER_REGISTRYY", "x", "unknown setting(s): BATCOMPUTER_REGISTRYY"),
])
def test_bad_values_are_refused_with_the_variable_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({name: value})


def test_every_setting_is_described() -> None:
    rows = Settings.describe()
    assert all(var.startswith("BATCOMPUTER_") and help_text for var, _, help_text in rows)


def test_the_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [var for var, _, _ in Settings.describe() if f"`{var}`" not in readme]
    assert missing == []
