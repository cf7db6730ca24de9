"""The gateway's and the modeler's settings are read one way: `HEADWATER_*` variables over
the TOML file `HEADWATER_CONFIG` names, over the defaults; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.gateway import ConfigError as GatewayConfigError
from headwater.gateway import Settings
from headwater.modeler import ConfigError, ModelerSettings


def test_the_environment_wins_over_the_file_for_both(tmp_path: Path) -> None:
    config = tmp_path / "headwater.toml"
    config.write_text(
        'clickhouse_url = "http://me:pw@ch.example.com:8123"\n'
        'clickhouse_database = "from_file"\n'
        'redis_url = "redis://127.0.0.1:6379/1"\n'
        'models = "/etc/headwater/models.toml"\n'
        "alert_smtp_port = 2525\n"
        'alert_smtp_to = ["a@example.com", "b@example.com"]\n'
        "[write_keys]\n"
        'k1 = "shop"\n'
    )
    environ = {"HEADWATER_CONFIG": str(config), "HEADWATER_CLICKHOUSE_DATABASE": "from_env"}
    gateway = Settings.from_env(environ)
    modeler = ModelerSettings.from_env(environ)
    for settings in (gateway, modeler):
        assert (
            settings.clickhouse_url,
            settings.clickhouse_database,
            settings.redis_url,
            settings.models,
        ) == (
            "http://me:pw@ch.example.com:8123",
            "from_env",
            "redis://127.0.0.1:6379/1",
            "/etc/headwater/models.toml",
        )
    assert gateway.write_keys == {"k1": "shop"}
    assert (modeler.alert_smtp_port, modeler.alert_smtp_to) == (
        2525,
        ("a@example.com", "b@example.com"),
    )


def test_both_default_to_chdb_under_the_working_directory() -> None:
    expected = "chdb:///srv/app/.headwater/clickhouse"
    assert Settings.from_env({}, cwd=Path("/srv/app")).clickhouse_url == expected
    assert ModelerSettings.from_env({}, cwd=Path("/srv/app")).clickhouse_url == expected
    empty = {"HEADWATER_CLICKHOUSE_URL": ""}  # set but empty: the default too
    assert ModelerSettings.from_env(empty, cwd=Path("/srv/app")).clickhouse_url == expected


@pytest.mark.parametrize(
    ("environ", "toml", "message"),
    [
        (
            {"HEADWATER_CLICKHOUSE_URL": "chdb://relative/dir"},
            "",
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///absolute/dir,"
            " got chdb://relative/dir",
        ),
        (
            {"HEADWATER_CLICKHOUSE_URL": "chdb://"},
            "",
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///absolute/dir, got chdb://",
        ),
        (
            {},
            'clickhouse_url = "tcp://me:s3cret@ch.example.com:9000"\n',
            "bad setting: HEADWATER_CLICKHOUSE_URL must be chdb:///abs/dir or"
            " http(s)://user:pass@host:port/db, got 'tcp://***@ch.example.com:9000'",
        ),
        (
            {},
            "clickhouse_database = 7\n",
            "bad setting: HEADWATER_CLICKHOUSE_DATABASE: Expected `str`, got `int`",
        ),
        (
            {"HEADWATER_CLICKHOUSE_DATABASE": "my-db"},
            "",
            "bad setting: HEADWATER_CLICKHOUSE_DATABASE must be letters, digits and _, got 'my-db'",
        ),
        (
            {},
            "clickhouse_url = \n",
            "HEADWATER_CONFIG={path}: Invalid value (at line 1, column 18)",
        ),
    ],
)
def test_a_bad_value_stops_both_naming_its_variable(
    environ: dict[str, str], toml: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "headwater.toml"
    path.write_text(toml)
    environ = {"HEADWATER_CONFIG": str(path), **environ}
    with pytest.raises(GatewayConfigError) as gateway:
        Settings.from_env(environ)
    with pytest.raises(ConfigError) as modeler:
        ModelerSettings.from_env(environ)
    assert str(gateway.value) == str(modeler.value) == message.format(path=path)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    message = f"HEADWATER_CONFIG={path}: [Errno 2] No such file or directory: '{path}'"
    with pytest.raises(GatewayConfigError) as gateway:
        Settings.from_env({"HEADWATER_CONFIG": str(path)})
    with pytest.raises(ConfigError) as modeler:
        ModelerSettings.from_env({"HEADWATER_CONFIG": str(path)})
    assert str(gateway.value) == str(modeler.value) == message


def test_the_modelers_own_variables_read_from_text_or_the_file(tmp_path: Path) -> None:
    environ = {
        "HEADWATER_ALERT_SMTP_HOST": "127.0.0.1",
        "HEADWATER_ALERT_SMTP_PORT": "2525",
        "HEADWATER_ALERT_SMTP_FROM": "hw@example.com",
        "HEADWATER_ALERT_SMTP_TO": "a@example.com, b@example.com",
        "HEADWATER_ALERT_SMTP_STARTTLS": "yes",
    }
    from_env = ModelerSettings.from_env(environ, cwd=tmp_path)
    config = tmp_path / "headwater.toml"
    config.write_text(
        'alert_smtp_host = "127.0.0.1"\nalert_smtp_port = 2525\n'
        'alert_smtp_from = "hw@example.com"\n'
        'alert_smtp_to = ["a@example.com", "b@example.com"]\nalert_smtp_starttls = true\n'
    )
    from_file = ModelerSettings.from_env({"HEADWATER_CONFIG": str(config)}, cwd=tmp_path)
    assert from_env == from_file
    assert (from_file.alert_smtp_port, from_file.alert_smtp_starttls) == (2525, True)
    assert from_file.alert_smtp_to == ("a@example.com", "b@example.com")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"HEADWATER_FORWARD_SETTLE_SECONDS": "-1"},
            "bad setting: HEADWATER_FORWARD_SETTLE_SECONDS must be 0 or more",
        ),
        (
            {"HEADWATER_FORWARD_BATCH_SIZE": "0"},
            "bad setting: HEADWATER_FORWARD_BATCH_SIZE must be positive",
        ),
        (
            {"HEADWATER_FORWARD_POLL_SECONDS": "nan"},
            "bad setting: HEADWATER_FORWARD_POLL_SECONDS must be positive",
        ),
        (
            {"HEADWATER_FORWARD_IN_PROCESS": "maybe"},
            "bad setting: HEADWATER_FORWARD_IN_PROCESS: Expected `bool`, got `str`",
        ),
    ],
)
def test_a_bad_forwarding_setting_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(GatewayConfigError) as refused:
        Settings.from_env(environ)
    assert str(refused.value) == message


def test_forwarding_reads_its_settings_from_text() -> None:
    settings = Settings.from_env(
        {
            "HEADWATER_FORWARD_IN_PROCESS": "false",
            "HEADWATER_FORWARD_BATCH_SIZE": "100",
            "HEADWATER_FORWARD_SETTLE_SECONDS": "0",
        }
    )
    assert (
        settings.forward_in_process,
        settings.forward_batch_size,
        settings.forward_settle_seconds,
        settings.forward_lease_seconds,
    ) == (False, 100, 0.0, 30.0)
