"""Engine arguments as env vars (MAX_NUM_SEQS, KV_CACHE_DTYPE, SPECULATIVE_CONFIG, ...), and typo hints.

Which names exist comes from vLLM's AsyncEngineArgs (worker/startup/engine_args.py passes them in): this module
only reads the environment, so that config/ stays the one place env vars are read and imports no vLLM.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping

from config.migration import MIGRATION, engine_arg_aliases
from config.settings import setting_names

# Engine arguments whose upper-case name other programs use for something else (torch.distributed's
# rendezvous, generic log levels): they are reachable through ENGINE_ARGS only.
SHARED_ENV_NAMES = frozenset({"MASTER_ADDR", "MASTER_PORT", "NNODES", "NODE_RANK", "LOG_LEVEL"})

# Env var prefixes of other programs: never reported as typos of ours.
_FOREIGN_PREFIXES = ("VLLM_", "RUNPOD_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH", "PYTORCH_", "OMP_", "LC_", "XDG_",
                     "PYTHON", "HF_HUB_", "HF_HOME", "TRANSFORMERS_", "TOKENIZERS_", "UV_", "PIP_")
TYPO_CUTOFF = 0.85  # difflib ratio: MAX_NUM_SEQ ~ MAX_NUM_SEQS (0.96), TENSOR_PARALLEL ~ TENSOR_PARALLEL_SIZE (0.86)


def env_name(field: str) -> str:
    return field.upper()


def engine_arg_env(fields: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{ENV_NAME: raw value} for each engine argument `field` set as an env var (blank counts as unset),
    aliases of the official worker (TOKENIZER_NAME) included under the name they stand for."""
    environ = os.environ if environ is None else environ
    given = {env_name(f): environ[env_name(f)] for f in fields if environ.get(env_name(f), "").strip()}
    return {**given, **engine_arg_aliases(environ, setting_names())}


def typo_hints(known: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each env var that is none of `known` (settings, engine arguments) nor a name of the
    official worker, but close to one of them: MAX_NUM_SEQ -> MAX_NUM_SEQS."""
    environ = os.environ if environ is None else environ
    known = set(known) | set(MIGRATION)
    hints = []
    for name in sorted(environ):
        if name in known or not name.isupper() or name.startswith(_FOREIGN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=TYPO_CUTOFF)
        if close:
            hints.append(f"env var {name} is not a setting of this worker: did you mean {close[0]}?")
    return hints
