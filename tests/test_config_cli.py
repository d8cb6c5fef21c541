"""Config precedence (file < environment < option) and the CLI's user-facing errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.config import ConfigError, load_config
from store_helpers import created, no_store_error


def write(tmp_path, text):
    path = tmp_path / "callkpi.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.store.db == "callkpi.db"
    assert config.agi.bind == "127.0.0.1"
    assert config.kpi.service_level_s == 20
    assert config.source == "defaults"


def test_file_then_environment(tmp_path):
    path = write(tmp_path, '[ami]\nport = 5039\nsecret = "from-file"\n[kpi]\nwrapup_reasons = ["ACW"]\n')
    config = load_config(path, env={"CALLKPI_AMI_SECRET": "from-env", "CALLKPI_DB": "/x.db",
                                    "CALLKPI_KPI_CONVERSION_CODES": "sale, upsell"})
    assert config.ami.port == 5039
    assert config.ami.secret == "from-env"
    assert config.store.db == "/x.db"
    assert config.kpi.wrapup_reasons == ["ACW"]
    assert config.kpi.conversion_codes == ["sale", "upsell"]


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, '[server]\nname = "pbx-east"\n')
    assert load_config(env={"CALLKPI_CONFIG": str(path)}).server.name == "pbx-east"


@pytest.mark.parametrize("text, message", [
    ("[ami]\nport = 'many'\n", r"\[ami\] port: expected int"),
    ("[ami]\nprot = 1\n", "unknown key 'prot' in \\[ami\\]"),
    ("[nonsense]\n", r"unknown section \[nonsense\]"),
    ("[ami\n", "invalid TOML"),
])
def test_bad_config_names_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError, match="CALLKPI_AMI_PORT: expected int"):
        load_config(write(tmp_path, ""), env={"CALLKPI_AMI_PORT": "x"})


def test_cli_bad_config_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(write(tmp_path, "[ami\n")), "db", "info"])
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and "invalid TOML" in result.output
    assert "Traceback" not in result.output


def test_cli_db_info_missing_db(make_store_url):
    none = make_store_url(empty=True)
    result = CliRunner().invoke(cli, ["db", "info", "--db", none])
    assert result.exit_code == 1
    assert result.output.strip() == no_store_error(none)


def test_cli_db_info_unreadable_db(tmp_path):  # SQLite alone: a file that is not a database
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 1000)
    result = CliRunner().invoke(cli, ["db", "info", "--db", str(junk)])
    assert result.exit_code == 1
    assert "cannot use database" in result.output and "Traceback" not in result.output


def test_cli_db_from_environment(store_url, monkeypatch):
    monkeypatch.setenv("CALLKPI_DB", created(store_url))
    result = CliRunner().invoke(cli, ["db", "info"])
    assert result.exit_code == 0, result.output
    shown = store_url.removeprefix("sqlite://")
    assert f"database: {shown}" in result.output and "events: 0" in result.output


def test_tables_and_lists_of_tables(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[kpi]\nwrapup_s = {support = 15}\n[report.targets]\nasa_s = 30\n'
                    '[[survey.questions]]\nid = "q1"\nkind = "csat"\n')
    config = load_config(path, env={})
    assert config.kpi.wrapup_s == {"support": 15.0}
    assert config.report.targets == {"asa_s": 30.0}
    assert config.survey.questions == [{"id": "q1", "kind": "csat"}]


def test_table_from_environment_and_bad_table(tmp_path):
    config = load_config(None, env={"CALLKPI_KPI_WRAPUP_S": "support=10, sales=5"})
    assert config.kpi.wrapup_s == {"support": 10.0, "sales": 5.0}
    path = tmp_path / "c.toml"
    path.write_text('[kpi]\nwrapup_s = {support = "x"}\n')
    with pytest.raises(ConfigError, match=r"wrapup_s.support: expected float"):
        load_config(path, env={})


def test_the_shipped_example_config_loads_and_names_every_section():
    import dataclasses
    from pathlib import Path

    from callkpi.config import Config

    path = Path(__file__).parent.parent / "asterisk_conf" / "callkpi.toml"
    config = load_config(path, env={})
    assert config.ami.username == "callkpi" and config.ami.secret == ""  # secret: env only
    text = path.read_text()
    for section in (f.name for f in dataclasses.fields(Config) if f.name != "source"):
        assert f"[{section}]" in text, section
