"""The operator's startup line names the store without its secrets, for every store URL."""

import pytest

from runstate.settings import VARIABLES, Settings, SettingsError, StoreSettings


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
    line = Settings(store=StoreSettings(redis_url=url)).describe()
    assert line.startswith(shown)
    assert "s3cret" not in line


def test_finished_runs_hot_state_ttl_comes_from_the_environment() -> None:
    assert Settings.from_env({}).reconcile.finished_ttl_seconds == 7 * 24 * 3600
    env = {"RUNSTATE_FINISHED_TTL_SECONDS": "3600"}
    assert Settings.from_env(env).reconcile.finished_ttl_seconds == 3600


@pytest.mark.parametrize(
    ("variable", "raw", "group", "field", "value"),
    [
        ("RUNSTATE_REDIS_URL", "redis://r:6379/0", "store", "redis_url", "redis://r:6379/0"),
        ("RUNSTATE_METRICS_HOST", "127.0.0.1", "server", "host", "127.0.0.1"),
        ("RUNSTATE_METRICS_PORT", "9090", "server", "port", 9090),
        ("RUNSTATE_NAMESPACES", "a, b,,", "watch", "namespaces", ("a", "b")),
        ("RUNSTATE_WORKERS", "4", "reconcile", "workers", 4),
        ("RUNSTATE_RESYNC_SECONDS", "30", "reconcile", "resync_seconds", 30.0),
        ("RUNSTATE_CREATE_CONCURRENCY", "8", "reconcile", "create_concurrency", 8),
        ("RUNSTATE_STATUS_COALESCE_SECONDS", "0", "reconcile", "status_coalesce_seconds", 0.0),
        ("RUNSTATE_SLOT_TTL_SECONDS", "300", "reconcile", "slot_ttl_seconds", 300.0),
        ("RUNSTATE_FINISHED_TTL_SECONDS", "60", "reconcile", "finished_ttl_seconds", 60),
        ("RUNSTATE_STANDALONE", "yes", "peering", "standalone", True),
        ("RUNSTATE_PEERING", "runstate", "peering", "name", "runstate"),
        ("RUNSTATE_PEERING_PRIORITY", "7", "peering", "priority", 7),
        ("RUNSTATE_PEERING_LIFETIME", "30", "peering", "lifetime", 30),
    ],
)
def test_every_variable_lands_in_its_group(
    variable: str, raw: str, group: str, field: str, value: object
) -> None:
    settings = Settings.from_env({variable: raw})
    assert getattr(getattr(settings, group), field) == value
    # and nothing else moved
    assert (
        settings.replace(group, **{field: getattr(getattr(Settings(), group), field)}) == Settings()
    )


def test_the_table_covers_every_setting() -> None:
    """Every field of every group is a variable of the environment: no knob is hard-wired."""
    import dataclasses

    fields = {
        (g.name, f.name)
        for g in dataclasses.fields(Settings)
        for f in dataclasses.fields(getattr(Settings(), g.name))
    }
    assert {(v.group, v.field) for v in VARIABLES} == fields


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("RUNSTATE_WORKERS", "many"),
        ("RUNSTATE_WORKERS", "0"),
        ("RUNSTATE_METRICS_PORT", "70000"),
        ("RUNSTATE_RESYNC_SECONDS", "-1"),
        ("RUNSTATE_STANDALONE", "perhaps"),
        ("RUNSTATE_PEERING_PRIORITY", "high"),
        ("RUNSTATE_STATUS_COALESCE_SECONDS", "1e20"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({variable: raw})
    assert str(err.value).startswith(f"{variable}: ")
    assert repr(raw) in str(err.value)
