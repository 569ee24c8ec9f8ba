"""One Serve config for every app: serve/config.yaml (offline, CPU) and its GPU profile serve/config.gpu.yaml are
valid Serve configs whose `args:` blocks build their applications, the GPU profile runs the same applications
on vLLM with GPUs, and builder arguments given on `serve run`'s command line (flat, dotted, text) work."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.utils import import_attr
from ray.serve.schema import ServeDeploySchema
from ray.serve.scripts import convert_args_to_dict

REPO = Path(__file__).resolve().parents[2]
LOCAL = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
GPU = yaml.safe_load((REPO / "serve" / "config.gpu.yaml").read_text())


def _args_model(import_path):
    builder = import_attr(import_path)
    return next(iter(builder.__annotations__.values()))


@pytest.mark.parametrize("config", [LOCAL, GPU], ids=["config.yaml", "config.gpu.yaml"])
def test_every_application_builds_from_its_args(config):
    ServeDeploySchema.model_validate(config)
    assert config["http_options"]["host"] == "127.0.0.1"  # local by default; the cluster's is 0.0.0.0
    for app in config["applications"]:
        # What `serve run` does with each entry, short of starting it: the Application binds.
        built = call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]), app["args"])
        assert isinstance(built, Application), app["name"]


def test_local_config_fits_two_cpus():
    """`serve run serve/config.yaml` on a 2-core machine: every replica must fit, or some never start."""
    total = 0.0
    for app in LOCAL["applications"]:
        args = _args_model(app["import_path"]).model_validate(app["args"])
        replicas = [getattr(args, name) for name in type(args).model_fields if name.endswith("_replica")]
        total += sum(r.num_cpus * r.num_replicas for r in replicas)
    assert total <= 2.0, f"serve/config.yaml reserves {total} CPUs"


def test_gpu_profile_runs_the_same_applications_on_gpus():
    def shape(config):
        return [(a["name"], a["route_prefix"], a["import_path"]) for a in config["applications"]]

    assert shape(GPU) == shape(LOCAL), "serve/config.gpu.yaml must list serve/config.yaml's applications"
    for app in GPU["applications"]:
        args = _args_model(app["import_path"]).model_validate(app["args"])
        assert args.llm.engine.backend == "vllm", app["name"]
        assert args.llm_replica.num_gpus > 0, app["name"]


def test_dotted_and_nested_args_from_the_command_line():
    from serve.llm import LLMAppArgs, build_llm_app

    cli = ("llm.engine.model=/ckpt", "llm.engine.backend=hf", "llm.max_batch_size=8",
           "llm_replica={num_gpus: 1, num_cpus: 2}", "llm.served_model_name=007")  # fmt: skip
    args = LLMAppArgs.model_validate(convert_args_to_dict(cli))
    assert (args.llm.engine.model, args.llm.engine.backend, args.llm.max_batch_size) == ("/ckpt", "hf", 8)
    assert (args.llm_replica.num_gpus, args.llm_replica.num_cpus) == (1.0, 2.0)
    assert args.llm.served_model_name == "007"  # a text field keeps text
    assert args.llm.engine.dtype == LLMAppArgs().llm.engine.dtype  # the rest keeps its defaults
    assert isinstance(
        call_user_app_builder_with_args_if_necessary(build_llm_app, convert_args_to_dict(cli)), Application
    )
    with pytest.raises(
        ValueError, match="unknown config key 'llm.engin.model'.*valid keys under llm: engine"
    ):
        LLMAppArgs.model_validate(convert_args_to_dict(["llm.engin.model=/x"]))
    with pytest.raises(ValueError, match="max_batch_size"):
        LLMAppArgs.model_validate(convert_args_to_dict(["llm.max_batch_size=many"]))


def _when_up(url, timeout_s=240):
    """The first 200 reply of GET `url`, polled every 2 s; fails the test after `timeout_s`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            reply = httpx.get(url, timeout=5)
            if reply.status_code == 200:
                return reply
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"{url} did not answer 200 within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.vllm
def test_serve_run_brings_every_application_up_offline(ray_session, tmp_path):
    """`serve run serve/config.yaml`, as documented, on the shared local Ray: every application answers.
    (Builders' command-line arguments go through Serve's own parsing in the test above.)"""
    from ray import serve

    serve.shutdown()  # the HTTP options come from the config file
    command = [str(Path(sys.executable).parent / "serve"), "run", "--non-blocking", "--address",
               ray_session.get_runtime_context().gcs_address, "serve/config.yaml"]  # fmt: skip
    log_path = tmp_path / "serve.log"
    try:
        with log_path.open("w") as log:
            done = subprocess.run(
                command, check=False, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=300
            )
        assert done.returncode == 0, log_path.read_text()[-3000:]
        for app in LOCAL["applications"]:
            _when_up(f"http://127.0.0.1:8000{app['route_prefix'].rstrip('/')}/healthz")
        models = httpx.get("http://127.0.0.1:8000/llm/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["tiny-small"]
    finally:
        serve.shutdown()
