"""The layout's boundaries, kept by tests: vLLM is imported in one module only; planning and the model files
import neither torch nor vLLM (the plan CLI runs on a laptop, the bake layer runs before the worker's code is
in the image); the README's Layout section names every module."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MODEL_CONFIGS, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()
PRODUCT_CODE = [ROOT / "handler.py", *sorted((ROOT / "config").rglob("*.py")), *sorted((ROOT / "worker").rglob("*.py"))]

# Runs `-m MODULE ARGS` with torch and vLLM made unimportable, as on a laptop or in the image's bake layer.
BLOCK_HEAVY_IMPORTS = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "vllm", "transformers"):
            raise ImportError(f"{name} is blocked: this code must run without it")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def imported_modules(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PRODUCT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_vllm_is_imported_only_through_vllm_api(path):
    if path == ROOT / "worker" / "vllm_api.py":
        return
    vllm_imports = sorted(m for m in imported_modules(path) if m == "vllm" or m.startswith("vllm."))
    assert not vllm_imports, f"{path.relative_to(ROOT)} imports {vllm_imports}: add the names to worker/vllm_api.py"


SERVING_PACKAGES = ("engine", "startup", "jobs", "requests", "routes", "media", "transports")


def is_serving_layer(module: str) -> bool:
    parts = module.split(".")
    return module == "worker.vllm_api" or (parts[0] == "worker" and len(parts) > 1 and parts[1] in SERVING_PACKAGES)


@pytest.mark.parametrize("package", ["worker/model_files", "worker/parallel"])
def test_pure_packages_import_neither_torch_nor_the_serving_layer(package):
    # Module level: worker/parallel/gpus.py may fall back to torch on a pod whose NVML cannot be read.
    for path in sorted((ROOT / package).rglob("*.py")):
        heavy = sorted(m for m in imported_modules(path, top_level_only=True) if m.split(".")[0] in ("torch", "vllm", "transformers")
                       or is_serving_layer(m))
        assert not heavy, f"{path.relative_to(ROOT)} imports {heavy}"


def test_plan_cli_runs_without_torch_or_vllm():
    model = MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json"
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY_IMPORTS, "worker.plan", str(model), "--gpus", "8", "--gpu-memory", "80"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Recommended: TENSOR_PARALLEL_SIZE=8" in result.stdout


def test_bake_layer_runs_with_only_the_files_copied_before_it(tmp_path):
    """The Dockerfile copies a few paths before `--bake` runs: those alone must import and run it."""
    bake_at = DOCKERFILE.index("python -m worker.model_files.download --bake")
    copied = [line.split()[:-1] for line in re.findall(r"^COPY (?!--)(.+)$", DOCKERFILE[:bake_at], re.MULTILINE)]
    sources = [source for line in copied for source in line if not source.startswith("requirements")
               and source != "constraints.txt"]
    assert sources, "no COPY before the bake step"
    for source in sources:
        target = tmp_path / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    # A local folder: the bake step resolves it without the hub, through the same code as a hub id.
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY_IMPORTS, "worker.model_files.download"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "MODEL_NAME": str(model), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(model)


def test_readme_layout_names_every_module():
    section = README[README.index("## Layout"):]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    missing = [str(p.relative_to(ROOT)) for p in PRODUCT_CODE
               if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in section]
    assert not missing, f"README's Layout section does not name: {missing}"
