"""The server's settings a teacher sets: limits for a class, the teacher password, cache cleanup.

One place, read from (later wins):
1. the defaults below, sized for a class of 30 on one machine;
2. a TOML file: ``TL_STUDIO_CONFIG`` names it, else ``<home>/settings.toml`` when it exists;
3. environment variables ``TL_STUDIO_<FIELD NAME IN CAPITALS>`` (``TL_STUDIO_MAX_SESSIONS=40``).

A value of 0 for a limit means "no limit". The README's "Running it for a class" lists them all;
``python -m tl_core settings`` prints the values in force and where each came from.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from tl_core.errors import ConfigError
from tl_core.workspace import default_home

ENV_CONFIG = "TL_STUDIO_CONFIG"
ENV_PREFIX = "TL_STUDIO_"


@dataclass(frozen=True)
class Settings:
    # -- per session (one browser link = one workspace) ---------------------------------------
    max_active_jobs: int = field(default=2, metadata={"help": "queued or training jobs per session"})
    max_datasets: int = field(default=10, metadata={"help": "datasets per session"})
    max_runs: int = field(default=60, metadata={"help": "runs kept per session"})
    max_session_disk_mb: int = field(default=3000, metadata={"help": "disk per session, MB (caches included)"})
    # -- per upload ------------------------------------------------------------------------------
    max_upload_mb: int = field(default=500, metadata={"help": "size of one upload (a zip, or one image), MB"})
    max_upload_images: int = field(default=5000, metadata={"help": "images in one upload"})
    # -- server-wide ------------------------------------------------------------------------------
    max_sessions: int = field(default=60, metadata={"help": "session workspaces on the server"})
    max_total_disk_gb: float = field(default=0.0, metadata={"help": "disk for all sessions, GB (0: only free space counts)"})
    min_free_disk_mb: int = field(default=1000, metadata={"help": "free space kept on the disk; starts and uploads stop below it"})
    cache_budget_gb: float = field(default=20.0, metadata={"help": "caches of all sessions, GB; least recently used go first"})
    cache_cleanup_minutes: int = field(default=30, metadata={"help": "how often caches are checked against the budget"})
    server_heavy_tasks: int = field(default=2, metadata={"help": "thumbnails, Grad-CAM, batch predictions and exports "
                                                              "the app's server process runs at once"})
    # -- a Ray cluster (README: "Jobs on a Ray cluster") ------------------------------------------
    ray_address: str = field(default="", metadata={"help": "the Ray cluster's dashboard address (e.g. http://head:8265) "
                                                        "jobs go to; empty: this machine's queue"})
    ray_job_cpus: float = field(default=1.0, metadata={"help": "CPUs each job asks of the Ray cluster"})
    ray_job_gpus: float = field(default=0.0, metadata={"help": "GPUs each job asks of the Ray cluster "
                                                            "(0 for a cluster without GPUs)"})
    # -- the teacher -----------------------------------------------------------------------------
    teacher_password: str = field(default="", repr=False,
                                  metadata={"help": "opens the Teacher page; empty: no teacher page"})

    def limit(self, name: str) -> float | None:
        """The limit ``name``, or None when it is 0 (no limit)."""
        value = getattr(self, name)
        return value if value else None


def settings_file(home: Path | None = None) -> Path | None:
    """The TOML file read, or None when there is none."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    path = (home or default_home()) / "settings.toml"
    return path if path.exists() else None


def load_settings(home: Path | None = None) -> Settings:
    """The settings in force now (cheap: read again on each call, so a changed file applies)."""
    values, _ = _collect(home)
    return Settings(**values)


def sources(home: Path | None = None) -> dict[str, str]:
    """For each setting, where its value came from: "default", the file's path, or the variable."""
    return _collect(home)[1]


def _collect(home: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origin: dict[str, str] = {f.name: "default" for f in fields(Settings)}
    path = settings_file(home)
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"The settings file {path} (named by {ENV_CONFIG}) does not exist.") from exc
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"The settings file {path} cannot be read ({exc}); fix or remove it.") from exc
        section = raw.get("tl_studio", raw)  # a [tl_studio] table, or the keys at the top level
        for key, value in section.items():
            values[key] = _coerce(key, value, str(path))
            origin[key] = str(path)
    for f in fields(Settings):
        env = ENV_PREFIX + f.name.upper()
        if os.environ.get(env) not in (None, ""):
            values[f.name] = _coerce(f.name, os.environ[env], env)
            origin[f.name] = env
    return values, origin


def _coerce(name: str, value: Any, where: str) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    if name not in types:
        known = ", ".join(sorted(types))
        raise ConfigError(f"Unknown setting '{name}' in {where}. Known settings: {known}.")
    kind = types[name]
    try:
        if kind == "str":
            return str(value)
        if isinstance(value, bool) or (kind == "int" and isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)  # int(True) and int(2.5) would pass silently
        number = float(value) if kind == "float" else int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Setting '{name}' in {where} must be a {'number' if kind == 'float' else 'whole number'}, "
                          f"not {value!r}.") from exc
    if number < 0:
        raise ConfigError(f"Setting '{name}' in {where} cannot be negative (0 means no limit).")
    return number


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


def readme_table() -> str:
    """The README's table of settings, made from the fields (a test keeps the README in step)."""
    rows = ["| Setting | Environment variable | Default | What it limits |", "|---|---|---|---|"]
    for f in fields(Settings):
        default = f'"{f.default}"' if isinstance(f.default, str) else f.default
        rows.append(f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | {default} | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
