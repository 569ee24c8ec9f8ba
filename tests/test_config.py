import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest
from pydantic import Field

from rayflow.config import Config, ConfigError, config_help, dump_config, load_config, parse_cli


class Engine(Config):
    model: str = Field("tiny-llm", description="HF model id or local path")
    temperature: float = Field(0.7, description="sampling temperature")
    revision: str | None = Field(None, description="model revision")


class Sampling(Config):
    max_tokens: int = Field(64, description="tokens to generate per prompt")
    stop: list[str] = Field(default_factory=list, description="stop strings")


class Job(Config):
    output_dir: Path = Field(Path("out"), description="where results go")
    seed: int = Field(0, description="random seed")
    dry_run: bool = Field(False, description="plan only")
    engine: Engine = Field(default_factory=Engine)
    sampling: Sampling = Field(default_factory=Sampling)


class NeedsModel(Config):
    model: str = Field(description="required model path")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config(Job)
    assert cfg == Job()
    assert cfg.engine.model == "tiny-llm"


def test_yaml_then_nested_overrides_are_typed(tmp_path):
    path = write(tmp_path, "seed: 1\nengine:\n  model: /a\n  temperature: 0.1\n")
    cfg = load_config(
        Job, path, ["engine.model=/x", "sampling.max_tokens=16", "engine.temperature=0.5", "dry_run=true"]
    )
    assert cfg.seed == 1  # from the file, untouched by overrides
    assert cfg.engine.model == "/x"
    assert cfg.engine.temperature == 0.5
    assert cfg.sampling.max_tokens == 16 and isinstance(cfg.sampling.max_tokens, int)
    assert cfg.dry_run is True


def test_list_and_null_override_values():
    cfg = load_config(Job, overrides=["sampling.stop=[a, b]", "engine.revision=null"])
    assert cfg.sampling.stop == ["a", "b"]
    assert cfg.engine.revision is None


def test_text_fields_keep_override_text_verbatim():
    cfg = load_config(Job, overrides=["engine.revision=1.10", "engine.model=007", "output_dir=2024"])
    assert cfg.engine.revision == "1.10"
    assert cfg.engine.model == "007"
    assert cfg.output_dir == Path("2024")


def test_unparseable_yaml_value_is_kept_as_string():
    cfg = load_config(Job, overrides=["engine.model=[unclosed"])
    assert cfg.engine.model == "[unclosed"


def test_unknown_override_key_lists_valid_keys_at_its_level():
    with pytest.raises(ConfigError) as exc:
        load_config(Job, overrides=["engine.modle=/x"])
    msg = str(exc.value)
    assert "engine.modle" in msg
    assert "model, temperature, revision" in msg
    assert "seed" not in msg  # top-level keys are not the ones that apply here


def test_unknown_top_level_override_key():
    with pytest.raises(ConfigError, match=r"'sed'.*valid keys: output_dir, seed, dry_run, engine, sampling"):
        load_config(Job, overrides=["sed=3"])


def test_override_into_a_leaf_field_is_rejected():
    with pytest.raises(ConfigError, match="seed is not a config section"):
        load_config(Job, overrides=["seed.x=1"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Job, overrides=["engine.model"])


def test_bad_override_value_names_dotted_path_value_and_source():
    with pytest.raises(ConfigError) as exc:
        load_config(Job, overrides=["engine.temperature=abc"])
    assert str(exc.value) == (
        "engine.temperature: Input should be a valid number, unable to parse string as a number"
        " (got 'abc' from override)"
    )
    assert isinstance(exc.value, ValueError)


def test_bad_file_value_names_the_file(tmp_path):
    path = write(tmp_path, "sampling:\n  max_tokens: lots\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Job, path)
    msg = str(exc.value)
    assert msg.startswith("sampling.max_tokens: Input should be a valid integer")
    assert f"(got 'lots' from {path})" in msg


def test_every_bad_field_is_reported(tmp_path):
    path = write(tmp_path, "seed: x\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Job, path, ["sampling.stop=[a, [2]]"])
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("seed:") and lines[0].endswith(f"from {path})")
    assert lines[1].startswith("sampling.stop[1]:") and lines[1].endswith("from override)")


def test_extra_key_in_yaml_is_rejected_by_name(tmp_path):
    path = write(tmp_path, "engine:\n  model: /a\n  temprature: 0.2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Job, path)
    msg = str(exc.value)
    assert msg.startswith("engine.temprature: unknown config key")
    assert str(path) in msg
    assert "valid keys: model, temperature, revision" in msg


def test_missing_required_field():
    with pytest.raises(ConfigError, match="^model: Field required$"):
        load_config(NeedsModel)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config(Job, missing)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: top level must be a mapping.*got list"):
        load_config(Job, path)


def test_empty_file_means_defaults(tmp_path):
    assert load_config(Job, write(tmp_path, "")) == Job()


def test_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="job.yaml: invalid YAML"):
        load_config(Job, write(tmp_path, "engine: [unclosed\n"))


def test_config_is_frozen_including_nested():
    cfg = load_config(Job)
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 3
    with pytest.raises(pydantic.ValidationError):
        cfg.engine.model = "/y"


def test_dump_config_is_json_able():
    data = dump_config(load_config(Job, overrides=["output_dir=/tmp/o"]))
    assert data["output_dir"] == "/tmp/o"
    assert data["engine"] == {"model": "tiny-llm", "temperature": 0.7, "revision": None}


def test_help_lists_nested_fields_with_types_defaults_and_descriptions():
    text = config_help(Job)
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert "engine" not in rows  # sections are expanded, not listed as values
    assert "sampling.max_tokens" in rows
    assert "int" in rows["sampling.max_tokens"] and "64" in rows["sampling.max_tokens"]
    assert "tokens to generate per prompt" in rows["sampling.max_tokens"]
    assert '"tiny-llm"' in rows["engine.model"]
    assert '"out"' in rows["output_dir"] and "null" in rows["engine.revision"]
    assert "[]" in rows["sampling.stop"] and "list[str]" in rows["sampling.stop"]
    assert "(required)" in config_help(NeedsModel)


def test_parse_cli_reads_file_and_overrides(tmp_path):
    path = write(tmp_path, "seed: 5\n")
    cfg = parse_cli(Job, ["engine.model=/m", "--config", str(path), "sampling.max_tokens=8"])
    assert (cfg.seed, cfg.engine.model, cfg.sampling.max_tokens) == (5, "/m", 8)


def test_parse_cli_bad_value_exits_2_with_message(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Job, ["engine.temperature=abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: engine.temperature: Input should be a valid number")
    assert "Traceback" not in err


def test_parse_cli_unknown_key_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Job, ["nope=1"])
    assert exc.value.code == 2
    assert "error: unknown config key 'nope'" in capsys.readouterr().err


def test_parse_cli_help_exits_0_with_description_and_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Job, ["--help"], description="Refine a dataset.")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    assert "Refine a dataset." in out
    assert "--config FILE" in out
    assert "engine.temperature" in out and "sampling temperature" in out


# --- overrides merge onto the job's declared defaults ------------------------------------------------------


class Lora(Config):
    r: int = Field(8, description="rank")
    alpha: int = Field(16, description="scale")


class Data(Config):
    train: str = Field(description="training file")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share")


class Declared(Config):
    """Sections whose declared defaults differ from their class defaults, as jobs declare them."""

    engine: Engine = Engine(model="declared", temperature=0.2)
    backend: Literal["vllm", "hf"] = Field("vllm", description="which backend")
    kwargs: dict[str, Any] = Field({"a": 1, "b": 2}, description="passed through")
    stop: list[str] = Field(["x", "y"], description="stop strings")
    lora: Lora | None = Field(None, description="adapters")
    lora_on: Lora | None = Field(Lora(r=3), description="adapters, on by default")
    data: Data = Data(train="declared.jsonl")


class NeedsData(Config):
    data: Data = Field(description="the data section, required")


def test_override_keeps_the_declared_section_defaults():
    cfg = load_config(Declared, overrides=["engine.revision=main"])
    assert cfg.engine == Engine(model="declared", temperature=0.2, revision="main")
    # Only the overridden key of a section changes, also for a section with a required key.
    assert load_config(Declared, overrides=["data.eval_fraction=0.2"]).data == Data(
        train="declared.jsonl", eval_fraction=0.2
    )


def test_file_merges_into_sections_key_by_key(tmp_path):
    path = write(tmp_path, "engine:\n  temperature: 0.9\n")
    cfg = load_config(Declared, path, ["engine.revision=v2"])
    assert cfg.engine == Engine(model="declared", temperature=0.9, revision="v2")


def test_dict_fields_and_lists_are_replaced_whole(tmp_path):
    path = write(tmp_path, "kwargs:\n  c: 3\n")
    cfg = load_config(Declared, path, ["stop=[z]"])
    assert cfg.kwargs == {"c": 3}
    assert cfg.stop == ["z"]


def test_a_key_under_an_off_section_builds_it_from_its_class_defaults(tmp_path):
    cfg = load_config(Declared, overrides=["lora.r=4"])
    assert cfg.lora == Lora(r=4, alpha=16)
    # `null` in the file turns a section off; a later override builds it anew from the class defaults.
    path = write(tmp_path, "lora_on: null\n")
    assert load_config(Declared, path).lora_on is None
    assert load_config(Declared, path, ["lora_on.alpha=5"]).lora_on == Lora(r=8, alpha=5)
    assert load_config(Declared, overrides=["lora_on=null"]).lora_on is None


def test_literal_override_is_checked_and_named():
    assert load_config(Declared, overrides=["backend=hf"]).backend == "hf"
    with pytest.raises(
        ConfigError, match=r"^backend: Input should be 'vllm' or 'hf' \(got 'tgi' from override\)$"
    ):
        load_config(Declared, overrides=["backend=tgi"])


def test_required_key_in_a_required_section_is_named():
    with pytest.raises(ConfigError, match="^data.train: Field required$"):
        load_config(NeedsData, overrides=["data.eval_fraction=0.2"])
    assert load_config(NeedsData, overrides=["data.train=t.jsonl"]).data.train == "t.jsonl"


def test_an_invalid_default_is_blamed_on_the_defaults_and_help_still_works():
    class BadDefault(Config):
        workers: int = Field("many", description="a default the class never validated")

    with pytest.raises(ConfigError, match=r"^workers: .*valid integer.*\(got 'many' from defaults\)$"):
        load_config(BadDefault)
    assert '"many"' in config_help(BadDefault)


def test_a_rule_across_a_section_names_the_section_without_a_value():
    class Ordered(Config):
        low: int = Field(0, description="lower bound")
        high: int = Field(1, description="upper bound")

        @pydantic.model_validator(mode="after")
        def _ordered(self):
            if self.low > self.high:
                raise ValueError("low must not exceed high")
            return self

    class Holder(Config):
        bounds: Ordered = Ordered()

    with pytest.raises(ConfigError, match=r"^bounds: Value error, low must not exceed high$"):
        load_config(Holder, overrides=["bounds.low=5"])


def test_the_real_jobs_keep_their_declared_sections():
    from rayflow.data.generate import GenerateConfig
    from rayflow.train.preference import PreferenceConfig

    cfg = parse_cli(GenerateConfig, ["engine.dtype=bfloat16"])
    assert (cfg.engine.backend, cfg.engine.max_model_len, cfg.engine.dtype) == ("vllm", 512, "bfloat16")
    pref = load_config(PreferenceConfig, overrides=["data.eval_fraction=0.2"])
    assert pref.data.eval_fraction == 0.2 and pref.data.train == PreferenceConfig().data.train


# --- the --help table ----------------------------------------------------------------------------------------


def help_rows(cls) -> dict[str, str]:
    """Key -> its first table line."""
    return {line.split()[0]: line for line in config_help(cls).splitlines() if not line.startswith(" ")}


def test_help_shows_the_declared_defaults_not_the_class_defaults():
    rows = help_rows(Declared)
    assert '"declared"' in rows["engine.model"] and "0.2" in rows["engine.temperature"]
    assert '"declared.jsonl"' in rows["data.train"]
    assert "vllm|hf" in rows["backend"] and '"vllm"' in rows["backend"]
    assert '{"a":1,"b":2}' in rows["kwargs"] and "dict[str,any]" in rows["kwargs"]
    assert "(required)" in help_rows(NeedsData)["data.train"]


def test_help_lists_the_keys_of_an_off_section_with_its_class_defaults():
    text = config_help(Declared)
    rows = help_rows(Declared)
    assert rows["lora"].split()[1:3] == ["section?", "null"]
    assert "off (null) by default" in " ".join(text.split())
    assert rows["lora.r"].split()[1:3] == ["int", "8"]  # the class default
    assert rows["lora_on.r"].split()[1:3] == ["int", "3"]  # on by default: the declared value
    assert "lora_on" not in rows


def test_config_objects_inside_containers_show_only_what_differs():
    class Refs(Config):
        refs: dict[str, Engine] = Field(
            default_factory=lambda: {"a": Engine(), "b": Engine(temperature=0.0)}, description="engines"
        )

    assert '{"a":{},"b":{"temperature":0.0}}' in help_rows(Refs)["refs"]


def test_help_fits_100_columns_and_only_descriptions_wrap():
    class Wide(Config):
        a_rather_long_key_name_for_a_nested_setting: Literal["first", "second", "third", "fourth"] = Field(
            "first", description="words " * 40
        )
        short: tuple[str, ...] = Field(("x" * 30,) * 4, description="a default too wide for one line")

    class Deep(Config):
        section_with_a_long_name: Wide = Wide()
        n: int = Field(1, description="count " * 30)

    for cls in (Wide, Deep, Declared, Job):
        lines = config_help(cls).splitlines()
        assert max(map(len, lines)) <= 100, cls.__name__
        assert " ".join(config_help(cls).split()).count("words") in (0, 40)
    deep = config_help(Deep).splitlines()
    first = next(i for i, line in enumerate(deep) if line.startswith("section_with_a_long_name.short"))
    # The default that cannot share its key's line follows it whole, in pieces marked `= `.
    assert deep[first + 1].startswith("    = [")
    pieces = [line[6:] for line in deep[first + 1 :] if line.startswith("    = ")]
    assert json.loads("".join(pieces)) == ["x" * 30] * 4
