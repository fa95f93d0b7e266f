"""docs/configuration.md and ray_cluster.yaml must stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from schemas import settings as settings_module
from schemas.settings import Settings, SettingsError, documented_variables, load_settings

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()
# The parser each kind in the doc stands for (`_url` builds a closure named `parse`).
KIND_PARSERS = {
    "host": "_host",
    "port": "_port",
    "integer": "_integer",
    "number": "_positive_float",
    "flag": "_flag",
    "text": "_text",
    "URL": "parse",
    "secret": "_secret",
    "secrets": "_secrets",
    "API key": "_api_key",
    "URL prefixes": "_url_prefixes",
}


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under `## heading`, as lists of stripped cells."""
    section = DOC.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


VARIABLE_ROWS = {re.fullmatch(r"`([A-Z_]+)`", row[0]).group(1): row for row in table_rows("Variables")}


def test_the_table_lists_exactly_the_variables_settings_reads() -> None:
    rows = [row[0] for row in table_rows("Variables")]
    assert len(rows) == len(set(rows)), "a variable is listed twice"
    assert sorted(VARIABLE_ROWS) == sorted(documented_variables())


@pytest.mark.parametrize("variable", documented_variables())
def test_default_and_kind_match_the_code(variable: str) -> None:
    _, kind, default, meaning = VARIABLE_ROWS[variable]
    field, parser = settings_module._VARIABLES[variable]
    expected = msgspec.structs.asdict(Settings())[field]
    shown = (
        "unset"
        if expected is None or expected == ()
        else str(expected).lower()
        if isinstance(expected, bool)
        else str(expected)
    )
    assert default == f"`{shown}`" or (shown == "unset" and default == "unset"), (variable, default, shown)
    assert KIND_PARSERS[kind.split(":")[0]] == parser.__name__, (variable, kind)
    assert meaning


def test_every_kind_is_explained() -> None:
    explained = {row[0] for row in table_rows("Value kinds and what an invalid value does")}
    assert explained == set(KIND_PARSERS)


def test_the_example_error_is_the_real_one() -> None:
    line = re.search(r"^\s*mailers: (MAILERS_PORT .*)$", DOC, flags=re.MULTILINE).group(1)
    with pytest.raises(SettingsError) as raised:
        load_settings({"MAILERS_PORT": "99999"})
    assert str(raised.value) == line


@pytest.mark.parametrize(
    "variable", ["MAILERS_SECRET_KEY", "MAILERS_SECRET_KEYS_OLD", "MAILERS_BOOTSTRAP_KEY"]
)
def test_secret_values_are_never_echoed(variable: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: "short-secret-value"})
    assert variable in str(raised.value) and "short-secret-value" not in str(raised.value)


def test_ray_cluster_yaml_is_a_launcher_config() -> None:
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    for key in (
        "cluster_name",
        "provider",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in command for command in config["setup_commands"])
    assert any("ray start --head" in command for command in config["head_start_ray_commands"])
    assert any("--address" in command for command in config["worker_start_ray_commands"])


def test_ray_cluster_yaml_passes_rays_own_schema() -> None:
    # Private but stable helpers: what `ray up` itself runs before touching any cloud.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())))
