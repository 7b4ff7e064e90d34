"""Which names hold secrets, and the one mask shown in their place in logs, errors and outputs."""

from __future__ import annotations

import re
from typing import Any

MASK = "**********"

# Keys that name a secret (hf_token, api_key, aws_secret_access_key, password, ...), not max_num_batched_tokens.
_SECRET_NAME = re.compile(r"(^|_)token$|key$|secret|password|passwd|credential", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def masked_if_secret(name: str, value: Any) -> Any:
    """`value`, or the mask when `name` says it holds a secret."""
    return MASK if is_secret_name(name) else value


def mask_secret_keys(value: Any) -> Any:
    """`value` with every entry whose key names a secret masked, at any depth (nested vLLM configs)."""
    if isinstance(value, dict):
        return {k: masked_if_secret(str(k), mask_secret_keys(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secret_keys(item) for item in value]
    return value
