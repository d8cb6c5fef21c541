"""Configuration: a TOML file, then environment variables, then command-line options.

Where the file is: `--config PATH`, else `$CALLKPI_CONFIG`, else `./callkpi.toml`, else
`/etc/callkpi/callkpi.toml`, else built-in defaults. Every key can be overridden by an
environment variable `CALLKPI_<SECTION>_<KEY>` (e.g. `CALLKPI_AMI_SECRET`), so secrets need
not be written in the file; `CALLKPI_DB` overrides `[store] db`.

Each section is a dataclass owned by the package that uses it; add a field with a default to
add a setting. A number setting with limits is annotated with its `Range`, and a secret with
`Secret`: the file is refused when it loads if a value is out of range, and an error about a
secret never shows its value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

from callkpi.errors import UserError

SEARCH_PATHS = (Path("callkpi.toml"), Path("/etc/callkpi/callkpi.toml"))
Number = TypeVar("Number", int, float)


class ConfigError(UserError):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Range:
    """The values a number setting may take: `low` (excluded when `open_low`) to `high`."""

    low: float
    high: float | None = None
    open_low: bool = False

    def refuses(self, value: float) -> bool:
        return (value <= self.low if self.open_low else value < self.low) or (
            self.high is not None and value > self.high)

    def __str__(self) -> str:
        if self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"{'more than' if self.open_low else 'at least'} {self.low:g}"


class _SecretMark:
    """Marks a setting whose value must never appear in a message."""


Port = Annotated[int, Range(1, 65535)]
Count = Annotated[int, Range(1)]
Duration = Annotated[float, Range(0)]  # seconds, hours or days; 0 is "none" or "off"
Interval = Annotated[float, Range(0, open_low=True)]  # a period something waits or repeats
Secret = Annotated[str, _SecretMark()]


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
    batch_lines: Count = 20_000
    poll_s: Interval = 0.5


@dataclass
class AmiConfig:
    host: str = "127.0.0.1"
    port: Port = 5038
    username: str = "callkpi"
    secret: Secret = ""
    ping_interval_s: Interval = 10.0
    reconnect_max_s: Interval = 30.0
    queue_max: Count = 100_000
    batch_max: Count = 2_000
    flush_interval_s: Interval = 0.1


@dataclass
class AgiConfig:
    bind: str = "127.0.0.1"
    port: Port = 4573
    # FastAGI has no authentication: a non-loopback bind needs the sources it may accept.
    allow: list[str] = field(default_factory=list)
    max_connections: int = 1000  # open at once, in total
    max_per_peer: int = 500  # open at once from one address
    spool: str = ""  # answers on their way to the store; "": <db>-agi-spool beside the store


@dataclass
class KpiConfig:
    service_level_s: Duration = 20.0
    short_abandon_s: Duration = 0.0
    repeat_window_h: Duration = 72.0
    wrapup_reasons: list[str] = field(default_factory=lambda: ["ACW", "wrapup"])
    # the top score, one keypad digit; scores of 4 and up are the satisfied ones, so a scale
    # below 4 would make every caller unsatisfied
    csat_scale: Annotated[int, Range(4, 9)] = 5
    conversion_codes: list[str] = field(default_factory=lambda: ["sale"])
    # per queue, seconds: mirrors queues.conf `wrapuptime`, the ACW of a call with no ACW pause
    wrapup_s: dict[str, Duration] = field(default_factory=dict)
    # mirrors queues.conf `persistentmembers` (Asterisk's sample: yes): members and their pauses
    # outlive a restart, which writes no ADDMEMBER/PAUSE for them
    persistent_members: bool = True
    # a CSAT score is "good" at this digit or more; 0: the scale's two highest points (top-2-box)
    csat_good_min: Annotated[int, Range(0, 9)] = 0
    # caller ids that are no number (any case; empty always): no repeat call, no FCR contact
    no_number: list[str] = field(default_factory=lambda: [
        "anonymous", "unknown", "restricted", "private"])


@dataclass
class AgentsConfig:
    # member interface -> member name, for queue_log lines that name a member by its interface
    # (log_membername_as_agent = no): {"PJSIP/1001" = "Alice"}; AMI teaches the rest
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class ReportConfig:
    # IANA zone of the report's days; empty: this machine's (TZ, then /etc/localtime)
    timezone: str = ""
    # headline targets shown beside each tile; a missing key shows no target
    targets: dict[str, Annotated[float, Range(0)]] = field(default_factory=lambda: {
        "service_level_pct": 80.0, "asa_s": 20.0, "abandon_rate_pct": 5.0, "aht_s": 300.0,
        "csat_pct": 85.0, "fcr_pct": 75.0})
    title: str = ""  # empty: "Call-center report" in the report's language
    locale: str = "en"  # en | fa: the language of the HTML report, the mail and CSV headers
    calendar: str = ""  # gregorian | jalali; empty: jalali with locale fa, else gregorian
    # queues and agents of the same name on two servers of the store are one queue, one agent
    # (one call center on several PBXs); false keeps them apart (a fleet of tenants' PBXs)
    merge_servers: bool = True
    # the servers ([server] name) the reports and the mail cover; empty: every server
    servers: list[str] = field(default_factory=list)


@dataclass
class SurveyConfig:
    """The post-call survey (agi_plugin/): configured, not coded. Questions are tables:
    {id, kind = "csat" | "resolution", prompt, digits, timeout_s, retries}."""

    questions: list[dict[str, Any]] = field(default_factory=list)  # empty: the built-in survey
    language: str = "en"  # "" keeps the channel's language
    languages: dict[str, str] = field(default_factory=dict)  # per queue, over `language`
    invalid_prompt: str = "pm-invalid-option"  # stock sounds of Debian's asterisk-prompt-en
    thank_you: str = "auth-thankyou"
    announce_text: bool = False  # SEND TEXT "SURVEY:<id>" before each question (tests)
    sample_rate: Annotated[float, Range(0, 1)] = 1.0  # share of eligible calls surveyed
    min_talk_s: Duration = 0.0  # skip calls talked shorter than this
    skip_recent_days: Duration = 0.0  # skip callers who answered a survey in the last N days


@dataclass
class SmtpConfig:
    host: str = "localhost"
    port: Port = 25
    tls: str = "none"  # none | starttls | ssl
    username: str = ""
    password: Secret = ""
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
    agents: AgentsConfig = field(default_factory=AgentsConfig)
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
    """The first of `paths` that is a file. One this user may not even look at is passed
    over (`sudo -u callkpi callkpi ...` run from root's home cannot see ./callkpi.toml),
    unless it was the only one: then running on defaults would hide the problem."""
    denied: Path | None = None
    for path in paths:
        try:
            if path.is_file():
                return path
        except PermissionError:
            denied = denied or path
    if denied is not None:
        raise ConfigError(f"cannot read config file {denied.absolute()}: permission denied "
                          "(run callkpi as a user who may, or give --config)")
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML config (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _apply_section(config: Config, name: str, values: dict[str, Any], source: str) -> None:
    section = getattr(config, name)
    hints = typing.get_type_hints(type(section), include_extras=True)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{source}: unknown key '{key}' in [{name}]")
        setattr(section, key, _coerce(value, hints[key], f"{source}: [{name}] {key}"))


def _apply_env(config: Config, name: str, env: Mapping[str, str]) -> None:
    section = getattr(config, name)
    hints = typing.get_type_hints(type(section), include_extras=True)
    for key, hint in hints.items():
        var = f"CALLKPI_{name}_{key}".upper()
        if var in env:
            setattr(section, key, _coerce_text(env[var], hint, var))


def _coerce(value: Any, annotated: Any, where: str) -> Any:
    hint, marks = _unwrap(annotated)
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _in_range(hint(value), marks, where)
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
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_shown(value, marks)}")


def _coerce_text(text: str, annotated: Any, where: str) -> Any:
    """Environment values are text: parse them as the setting's type."""
    hint, marks = _unwrap(annotated)
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint in (int, float):
            return _in_range(hint(text), marks, where)
        if typing.get_origin(hint) is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        if typing.get_origin(hint) is dict:  # "a=1,b=2"
            kind = typing.get_args(hint)[1]
            pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
            return {k.strip(): _coerce_text(v.strip(), kind, f"{where} {k.strip()}")
                    for k, v in pairs}
        return text
    except ValueError:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got "
                          f"{_shown(text, marks)}") from None


def _unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """`Annotated[float, Range(0)]` -> (float, (Range(0),)); a plain type has no marks."""
    if typing.get_origin(hint) is Annotated:
        return typing.get_args(hint)[0], hint.__metadata__
    return hint, ()


def _in_range(value: Number, marks: tuple[Any, ...], where: str) -> Number:
    if not math.isfinite(value):  # TOML and float() read inf and nan: never a setting
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    for mark in marks:
        if isinstance(mark, Range) and mark.refuses(value):
            raise ConfigError(f"{where}: must be {mark}, got {value:g}")
    return value


def _shown(value: Any, marks: tuple[Any, ...]) -> str:
    """A value as an error message may show it: a secret's never is."""
    if any(isinstance(mark, _SecretMark) for mark in marks):
        return f"{_toml_type(value)} (a secret's value is not shown: write it in quotes)"
    return repr(value)


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", list: "an array",
             dict: "a table"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "a value")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))
