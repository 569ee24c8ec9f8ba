"""serve/config.yaml without a cluster: it is a valid multi-application Serve config, and each application's
`args:` block reaches its builder the way `serve run` passes it (a dict turned into the typed args)."""

import importlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CONFIG = yaml.safe_load(Path(REPO, "serve/config.yaml").read_text())


def test_shipped_config_is_a_valid_multi_app_serve_config():
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(CONFIG)
    names = [a.name for a in schema.applications]
    assert {"judge", "llm"} <= set(names) and len(set(names)) == len(names)
    assert schema.http_options.host == "127.0.0.1"  # loopback unless the operator opens it


@pytest.mark.parametrize("app", CONFIG["applications"], ids=lambda a: a["name"])
def test_builder_gets_typed_args_from_yaml(app):
    # The helper `serve run` and `serve deploy` call: a YAML dict becomes the builder's pydantic model
    # only when the annotation is the class itself.
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    module, attr = app["import_path"].split(":")
    application = call_user_app_builder_with_args_if_necessary(
        getattr(importlib.import_module(module), attr), app["args"]
    )
    from rayflow.serving import LLMServerConfig

    ingress = application._bound_deployment
    [llm] = [a._bound_deployment for a in ingress.init_args if hasattr(a, "_bound_deployment")]
    assert llm.name == "LLMServer"
    [config] = llm.init_args
    assert isinstance(config, LLMServerConfig)
    assert config.engine.model == app["args"]["llm"]["engine"]["model"]
    assert llm.ray_actor_options["num_cpus"] == app["args"]["llm_replica"]["num_cpus"]


def test_one_vllm_engine_in_the_offline_config():
    # On a CPU machine two vLLM engines at once exhaust memory: the second app uses transformers.
    backends = [a["args"]["llm"]["engine"]["backend"] for a in CONFIG["applications"]]
    assert backends.count("vllm") == 1
