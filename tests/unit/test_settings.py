"""The operator's startup line names the store without its secrets, for every store URL."""

import pytest

from runstate.settings import Settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (None, "store=memory "),
        ("redis://:s3cret@redis:6379/0", "store=redis://:***@redis:6379/0 "),
        (
            "redis+sentinel://:s3cret@s1:26379,s2:26379/mymaster?sentinel_password=s3cret",
            "store=redis+sentinel://:***@s1:26379,s2:26379/mymaster?sentinel_password=*** ",
        ),
        (
            "redis+cluster://app:s3cret@n1:7000,n2:7001",
            "store=redis+cluster://app:***@n1:7000,n2:7001 ",
        ),
        ("redis://:s3cret@host:notaport", "store=redis://:***@host:notaport "),
    ],
)
def test_describe_masks_the_password_and_never_raises(url: str | None, shown: str) -> None:
    line = Settings(redis_url=url).describe()
    assert line.startswith(shown)
    assert "s3cret" not in line


def test_finished_runs_hot_state_ttl_comes_from_the_environment() -> None:
    assert Settings.from_env({}).finished_ttl_seconds == 7 * 24 * 3600
    assert Settings.from_env({"RUNSTATE_FINISHED_TTL_SECONDS": "3600"}).finished_ttl_seconds == 3600
