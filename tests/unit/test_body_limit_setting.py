"""`KODO_MAX_BODY_BYTES`: the API's request body limit (issue 8, "Inputs"), validated like the others."""

from __future__ import annotations

import pytest

from kodo.config import Settings
from kodo.errors import ConfigError


def test_default_is_one_mib() -> None:
    assert Settings.from_env({}).max_body_bytes == 1_048_576


def test_it_is_read_from_the_environment() -> None:
    assert Settings.from_env({"KODO_MAX_BODY_BYTES": "2048"}).max_body_bytes == 2048


@pytest.mark.parametrize("raw", ["0", "-1", "1MB", "1.5"])
def test_a_bad_value_refuses_to_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="invalid integer env value"):
        Settings.from_env({"KODO_MAX_BODY_BYTES": raw})
