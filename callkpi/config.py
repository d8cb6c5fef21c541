"""Configuration: a TOML file, then environment variables, then command-line options.

Where the file is: `--config PATH`, else `$CALLKPI_CONFIG`, else `./callkpi.toml`, else
`/etc/callkpi/callkpi.toml`, else built-in defaults. Every key can be overridden by an
environment variable `CALLKPI_<SECTION>_<KEY>` (e.g. `CALLKPI_AMI_SECRET`), so secrets need
not be written in the file; `CALLKPI_DB` overrides `[store] db`.

Each section is a dataclass owned by the package that uses it; add a field with a default to
add a setting.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from callkpi.errors import UserError

SEARCH_PATHS = (Path("callkpi.toml"), Path("/etc/callkpi/callkpi.toml"))


class ConfigError(UserError):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass
class StoreConfig:
    db: str = "callkpi.db"


@dataclass
class ServerConfig:
    # Identity of the PBX the events come from: uniqueids are only unique on one PBX.
    name: str = field(default_factory=socket.gethostname)


@dataclass
class QueueLogConfig:
    path: str = "/var/log/asterisk/queue_log"
    batch_lines: int = 20_000
    poll_s: float = 0.5


@dataclass
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callkpi"
    secret: str = ""
    ping_interval_s: float = 10.0
    reconnect_max_s: float = 30.0
    queue_max: int = 100_000
    batch_max: int = 2_000
    flush_interval_s: float = 0.1


@dataclass
class AgiConfig:
    bind: str = "127.0.0.1"
    port: int = 4573
    # FastAGI has no authentication: a non-loopback bind needs the sources it may accept.
    allow: list[str] = field(default_factory=list)
    max_connections: int = 1000  # open at once, in total
    max_per_peer: int = 500  # open at once from one address
    spool: str = ""  # answers on their way to the store; "": <db>-agi-spool beside the store


@dataclass
class KpiConfig:
    service_level_s: float = 20.0
    short_abandon_s: float = 0.0
    repeat_window_h: float = 72.0
    wrapup_reasons: list[str] = field(default_factory=lambda: ["ACW", "wrapup"])
    csat_scale: int = 5
    conversion_codes: list[str] = field(default_factory=lambda: ["sale"])
    # per queue, seconds: mirrors queues.conf `wrapuptime`, the ACW of a call with no ACW pause
    wrapup_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ReportConfig:
    timezone: str = "UTC"
    # headline targets shown beside each tile; a missing key shows no target
    targets: dict[str, float] = field(default_factory=lambda: {
        "service_level_pct": 80.0, "asa_s": 20.0, "abandon_rate_pct": 5.0, "aht_s": 300.0,
        "csat_pct": 85.0, "fcr_pct": 75.0})
    title: str = "Call-center report"


@dataclass
class SurveyConfig:
    """The post-call survey (agi_plugin/): configured, not coded. Questions are tables:
    {id, kind = "csat" | "resolution", prompt, digits, timeout_s, retries}."""

    questions: list[dict[str, Any]] = field(default_factory=list)  # empty: the built-in survey
    language: str = "en"
    invalid_prompt: str = "pm-invalid-option"  # stock sounds of Debian's asterisk-prompt-en
    thank_you: str = "auth-thankyou"
    announce_text: bool = False  # SEND TEXT "SURVEY:<id>" before each question (tests)
    sample_rate: float = 1.0  # share of eligible calls surveyed
    min_talk_s: float = 0.0  # skip calls talked shorter than this
    skip_recent_days: float = 0.0  # skip callers who answered a survey in the last N days


@dataclass
class SmtpConfig:
    host: str = "localhost"
    port: int = 25
    tls: str = "none"  # none | starttls | ssl
    username: str = ""
    password: str = ""
    sender: str = "callkpi@localhost"
    ca_file: str = ""
    verify: bool = True


@dataclass
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    queue_log: QueueLogConfig = field(default_factory=QueueLogConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    kpi: KpiConfig = field(default_factory=KpiConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    source: str = "defaults"  # the file it was read from


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] = os.environ) -> Config:
    """Read the config file (see module doc for where), then apply environment overrides."""
    path = path or env.get("CALLKPI_CONFIG") or _first_existing(SEARCH_PATHS)
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        data, source = _read_toml(Path(path)), str(path)
    config = Config(source=source)
    for section in _sections():
        values = dict(data.pop(section.name, {}) or {})
        _apply_section(config, section.name, values, source)
        _apply_env(config, section.name, env)
    if data:
        raise ConfigError(f"{source}: unknown section [{sorted(data)[0]}]")
    if db := env.get("CALLKPI_DB"):
        config.store.db = db
    return config


def _sections() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name != "source"]


def _first_existing(paths: tuple[Path, ...]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _apply_section(config: Config, name: str, values: dict[str, Any], source: str) -> None:
    section = getattr(config, name)
    hints = typing.get_type_hints(type(section))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{source}: unknown key '{key}' in [{name}]")
        setattr(section, key, _coerce(value, hints[key], f"{source}: [{name}] {key}"))


def _apply_env(config: Config, name: str, env: Mapping[str, str]) -> None:
    section = getattr(config, name)
    hints = typing.get_type_hints(type(section))
    for key, hint in hints.items():
        var = f"CALLKPI_{name}_{key}".upper()
        if var in env:
            setattr(section, key, _coerce_text(env[var], hint, var))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return hint(value)
    if hint is str and isinstance(value, str):
        return value
    if typing.get_origin(hint) is list and isinstance(value, list):
        item = typing.get_args(hint)[0]
        if typing.get_origin(item) is dict:  # a list of tables, checked by its owner
            if all(isinstance(v, dict) for v in value):
                return [dict(v) for v in value]
        else:
            return [str(v) for v in value]
    if typing.get_origin(hint) is dict and isinstance(value, dict):
        kind = typing.get_args(hint)[1]
        return {str(k): _coerce(v, kind, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def _coerce_text(text: str, hint: Any, where: str) -> Any:
    """Environment values are text: parse them as the setting's type."""
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint in (int, float):
            return hint(text)
        if typing.get_origin(hint) is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        if typing.get_origin(hint) is dict:  # "a=1,b=2"
            kind = typing.get_args(hint)[1]
            pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
            return {k.strip(): kind(v) for k, v in pairs}
        return text
    except ValueError:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {text!r}") from None


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))
