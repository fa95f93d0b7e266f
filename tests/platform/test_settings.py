import pytest

from schemas.settings import Settings, SettingsError, load_settings


def test_defaults():
    settings = load_settings({})
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8080, "./var")
    assert settings.redis_url is None and settings.embedded_redis
    assert settings.analytics_url is None and settings.ray_address is None


def test_values_are_read_and_typed():
    settings = load_settings(
        {
            "MAILERS_PORT": "9000",
            "MAILERS_REDIS_URL": "redis://10.0.0.1:6379/0",
            "MAILERS_ANALYTICS_URL": "chdb:///tmp/ch",
            "MAILERS_ALLOW_PRIVATE_WEBHOOKS": "yes",
            "MAILERS_PUBLIC_URL": "https://mail.acme.com",
        }
    )
    assert settings.port == 9000 and settings.redis_url == "redis://10.0.0.1:6379/0"
    assert settings.allow_private_webhooks is True and settings.base_url == "https://mail.acme.com"


@pytest.mark.parametrize(
    "variable,value",
    [
        ("MAILERS_PORT", "eighty"),
        ("MAILERS_PORT", "70000"),
        ("MAILERS_REDIS_URL", "http://x"),
        ("MAILERS_ANALYTICS_URL", "postgres://x"),
        ("MAILERS_SECRET_KEY", "short"),
        ("MAILERS_BOOTSTRAP_KEY", "not-a-key"),
        ("MAILERS_PUBLIC_URL", "ftp://x"),
        ("MAILERS_ALLOW_PRIVATE_WEBHOOKS", "maybe"),
        ("MAILERS_RATE_LIMIT_PER_SECOND", "0"),
    ],
)
def test_invalid_values_name_the_variable(variable, value):
    with pytest.raises(SettingsError) as refused:
        load_settings({variable: value})
    assert str(refused.value).startswith(variable)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]
