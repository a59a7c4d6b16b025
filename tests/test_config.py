"""One config for train, evaluate, serve and demo: file, environment, flags, errors, show."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfwise.cli.config_cmd import render
from shelfwise.cli.main import app
from shelfwise.config import ShelfwiseConfig, load_config
from shelfwise.exceptions import ConfigError

FILE = """
[storage]
url = "sqlite:///shop.db"

[train]
tune_weights = false

[[train.generators]]
name = "cooccurrence"

[[train.generators]]
name = "popularity"
weight = 0.1

[serve.exploration]
slots = 2
policy = "linucb"
params = { alpha = 0.5 }
"""


def test_file_env_and_flags_override_in_order_and_say_where(tmp_path: Path) -> None:
    path = tmp_path / "shelfwise.toml"
    path.write_text(FILE)
    loaded = load_config(path, env={"SHELFWISE_SERVE__PORT": "9001",
                                    "SHELFWISE_SERVE__EXPLORATION__SLOTS": "3",
                                    "SHELFWISE_SHARED_DATA": "/not/a/key"},
                         overrides={"serve.exploration.slots": (4, "--explore-slots"),
                                    "serve.host": (None, "--host")})
    cfg = loaded.config
    assert cfg.storage.url == "sqlite:///shop.db"
    assert [g.name for g in cfg.train.generators] == ["cooccurrence", "popularity"]
    assert cfg.serve.port == 9001 and cfg.serve.exploration.slots == 4
    assert cfg.serve.exploration.params == {"alpha": 0.5}, "no egreedy epsilon for linucb"
    assert cfg.serve.host == "127.0.0.1", "a flag that was not given changes nothing"
    src = loaded.sources
    assert src["storage.url"] == str(path)
    assert src["serve.port"] == "env SHELFWISE_SERVE__PORT"
    assert src["serve.exploration.slots"] == "--explore-slots"
    assert src["serve.host"] == "default" and src["train.cold_start"] == "default"


def test_the_short_store_variable_and_the_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[serve]\nport = 8123\n')
    loaded = load_config(env={"SHELFWISE_CONFIG": str(path),
                              "SHELFWISE_STORE": "sqlite:///x.db"})
    assert loaded.path == path and loaded.config.serve.port == 8123
    assert loaded.config.storage.url == "sqlite:///x.db"
    assert loaded.sources["storage.url"] == "env SHELFWISE_STORE"


def test_egreedy_exploration_gets_its_epsilon_in_one_place() -> None:
    cfg = load_config(env={}).config
    assert cfg.serve.exploration.params == {"epsilon": 0.2}
    assert cfg.serve.promotions.params == {}, "promotions keep the policy's own default"


@pytest.mark.parametrize(("text", "pattern"), [
    ('[serve]\nprot = 8000\n',
     r"serve\.prot = 8000: unknown key; allowed here: .*host.*port"),
    ('[serve]\nport = "eighty"\n', r"serve\.port = 'eighty': .*integer"),
    ('[serve.exploration]\npolicy = "softmax"\n',
     r"serve\.exploration.*unknown policy 'softmax'; known: .*linucb"),
    ('[train]\ncold_start = "semantic-x"\n', r"train\.cold_start: 'semantic-x' is not among"),
    ('[[train.generators]]\nname = "nope"\n',
     r"train\.generators\[0\]\.name = 'nope': unknown generator 'nope'; known: .*cooccurrence"),
    ('[train]\nfeed = "pipeline"\n', r"train\.feed = 'pipeline' needs a \[train\.pipeline\]"),
    ('[serve.cart]\npopularity = -1\n', r"serve\.cart\.popularity = -1: .*greater than or equal"),
    ('[serve\nport = 1\n', r"not valid TOML"),
])
def test_a_bad_key_or_value_is_one_error_naming_it(tmp_path: Path, text: str,
                                                  pattern: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path, env={})


def test_bad_environment_value_and_set_syntax() -> None:
    with pytest.raises(ConfigError, match=r"serve\.limits\.max_results = 0"):
        load_config(env={"SHELFWISE_SERVE__LIMITS__MAX_RESULTS": "0"})
    res = CliRunner().invoke(app, ["config", "show", "--set", "serve.port"])
    assert res.exit_code == 2 and "section.key=value" in res.output


def test_a_train_only_file_still_reads_as_the_train_section(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text('cold_start = "popularity"\n\n[[generators]]\nname = "popularity"\n')
    cfg = load_config(path, env={}).config
    assert [g.name for g in cfg.train.generators] == ["popularity"]


def test_show_renders_toml_that_reads_back_to_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "shelfwise.toml"
    path.write_text(FILE + '\n[train.pipeline]\n[[train.pipeline.generators]]\n'
                    'name = "cooccurrence"\n')
    loaded = load_config(path, env={"SHELFWISE_SERVE__PORT": "9001"})
    text = render(loaded)
    assert ShelfwiseConfig.model_validate(tomllib.loads(text)) == loaded.config
    assert f"slots = 2  # {path}" in text
    assert "port = 9001  # env SHELFWISE_SERVE__PORT" in text
    assert "host = \"127.0.0.1\"  # default" in text
    res = CliRunner().invoke(app, ["config", "show", "--config", str(path), "--set",
                                   "serve.exploration.slots=5"], env={})
    assert res.exit_code == 0, res.output
    assert "slots = 5  # --set serve.exploration.slots" in res.output
    res = CliRunner().invoke(app, ["config", "check", "--config", str(path)], env={})
    assert res.exit_code == 0 and "config ok" in res.output


def test_the_example_config_in_the_repo_is_valid_and_all_defaults() -> None:
    example = Path(__file__).resolve().parents[1] / "shelfwise.example.toml"
    loaded = load_config(example, env={})
    assert loaded.config == ShelfwiseConfig(), (
        "the example documents the defaults: keep it in step with the code")


def test_bundle_hash_covers_train_only() -> None:
    a = ShelfwiseConfig()
    b = a.model_copy(update={"serve": a.serve.model_copy(update={"port": 1})})
    assert a.bundle_hash() == b.bundle_hash()
    c = load_config(env={"SHELFWISE_TRAIN__TUNE_WEIGHTS": "false"}).config
    assert c.bundle_hash() != a.bundle_hash()
