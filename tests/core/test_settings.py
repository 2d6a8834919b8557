"""Settings: defaults, a TOML file, TL_STUDIO_* variables (later wins), and bad values named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from tl_core.errors import ConfigError
from tl_core.settings import ENV_CONFIG, Settings, load_settings, readme_table, settings_file, sources

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in [f.name for f in fields(Settings)] + ["CONFIG"]:
        monkeypatch.delenv(f"TL_STUDIO_{name.upper()}", raising=False)
    monkeypatch.setenv("TL_STUDIO_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_defaults_fit_a_class_and_0_means_no_limit(home):
    settings = load_settings()
    assert settings == Settings()
    assert settings_file() is None
    assert set(sources().values()) == {"default"}
    assert settings.limit("max_runs") == 60
    assert settings.limit("max_total_disk_gb") is None


def test_the_home_file_then_the_variables(home, monkeypatch):
    (home / "settings.toml").write_text("[tl_studio]\nmax_runs = 5\nmax_datasets = 4\ncache_budget_gb = 1.5\n")
    monkeypatch.setenv("TL_STUDIO_MAX_DATASETS", "7")
    settings = load_settings()
    assert (settings.max_runs, settings.max_datasets, settings.cache_budget_gb) == (5, 7, 1.5)
    origin = sources()
    assert origin["max_runs"] == str(home / "settings.toml")
    assert origin["max_datasets"] == "TL_STUDIO_MAX_DATASETS"
    assert origin["max_sessions"] == "default"


def test_a_file_named_by_the_variable_with_keys_at_the_top(home, tmp_path, monkeypatch):
    path = tmp_path / "class.toml"
    path.write_text('max_sessions = 31\nteacher_password = "s3cret"\n')
    monkeypatch.setenv(ENV_CONFIG, str(path))
    settings = load_settings()
    assert settings.max_sessions == 31 and settings.teacher_password == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(("where", "value", "expected"), [
    ("env", "lots", "'max_runs'.*whole number"),
    ("env", "-3", "'max_runs'.*negative"),
    ("env", "2.5", "'max_runs'.*whole number"),
    ("file", "true", "'max_runs'.*whole number"),
    ("file", "2.5", "'max_runs'.*whole number"),
])
def test_bad_values_name_the_setting(home, monkeypatch, where, value, expected):
    if where == "env":
        monkeypatch.setenv("TL_STUDIO_MAX_RUNS", value)
    else:
        (home / "settings.toml").write_text(f"max_runs = {value}\n")
    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_unknown_names_broken_files_and_missing_files_are_config_errors(home, tmp_path, monkeypatch):
    (home / "settings.toml").write_text("max_run = 3\n")
    with pytest.raises(ConfigError, match="Unknown setting 'max_run'.*max_runs"):
        load_settings()
    (home / "settings.toml").write_text("max_runs = [\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings()
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_a_float_setting_takes_a_number(home, monkeypatch):
    monkeypatch.setenv("TL_STUDIO_MAX_TOTAL_DISK_GB", "12.5")
    assert load_settings().max_total_disk_gb == 12.5
    monkeypatch.setenv("TL_STUDIO_MAX_TOTAL_DISK_GB", "big")
    with pytest.raises(ConfigError, match="'max_total_disk_gb'.*must be a number"):
        load_settings()


def test_the_readme_lists_every_setting_as_the_fields_describe_them():
    text = README.read_text(encoding="utf-8")
    assert readme_table() in text, "README's settings table is out of date: paste settings.readme_table()"
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert {f.name for f in fields(Settings)} <= listed
    for f in fields(Settings):
        assert f.metadata.get("help"), f"{f.name} has no help text for the README"
