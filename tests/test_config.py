"""Settings: one reader of the environment, and a bad value names its variable."""

import pytest

from chatbot.config import ENVIRONMENT_VARIABLES, Settings
from chatbot.errors import ConfigError


def test_the_listed_variables_are_exactly_the_ones_read():
    seen: set[str] = set()

    class Recording(dict):
        def get(self, key, default=None):
            seen.add(key)
            return super().get(key, default)

    Settings.from_env(Recording())
    assert seen == set(ENVIRONMENT_VARIABLES)


@pytest.mark.parametrize(
    "name, value",
    [
        ("CACHE_TTL", "soon"),
        ("RETRY_DELAY", "nan"),
        ("RATE_LIMIT_CHAT", "lots"),
        ("LOG_FORMAT", "xml"),
        ("PORT", "0"),
        ("IPV6_PREFIX_LENGTH", "0"),
        ("IPV6_PREFIX_LENGTH", "129"),
        ("IPV6_PREFIX_LENGTH", "/64"),
        ("ADMIN_TOKEN", "shorter-than-32-characters"),
        ("SOURCE_BASE_URL", "javascript:alert(1)//"),
        ("SOURCE_BASE_URL", "www.romega-solutions.com/knowledge"),
    ],
)
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_source_base_url_is_an_http_url_or_unset():
    assert Settings.from_env({}).source_base_url is None
    given = Settings.from_env({"SOURCE_BASE_URL": "https://www.romega-solutions.com/kb/"})
    assert given.source_base_url == "https://www.romega-solutions.com/kb/"


def test_cloud_defaults_follow_k_service():
    assert Settings.from_env({}).trusted_proxy_hops == 0
    cloud = Settings.from_env({"K_SERVICE": "chat"})
    assert cloud.trusted_proxy_hops == 1 and cloud.log_format == "json"
