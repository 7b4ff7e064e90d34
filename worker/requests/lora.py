"""LoRA adapters at serving time: the same adapters, with the same ids, for native jobs and the OpenAI routes.

vLLM's OpenAIServingModels numbers the adapters it is given (`--lora-modules`) 1, 2, ... in order; native
jobs use the same numbers, so a request through either API finds the adapter already loaded in its slot.
"""

from __future__ import annotations

from worker.model_files.adapters import Adapter
from worker.requests.errors import JobError, invalid_input
from worker.vllm_api import LoRAModulePath, LoRARequest


def openai_lora_modules(adapters: list[Adapter]) -> list[LoRAModulePath] | None:
    """The adapters as `vllm serve --lora-modules` passes them to the OpenAI app state (None: no adapters)."""
    return [LoRAModulePath(name=adapter.name, path=adapter.path) for adapter in adapters] or None


def lora_request(adapters: list[Adapter], name: str | None, field: str = "input.lora") -> LoRARequest | None:
    """The LoRARequest for the adapter a native job names (None: the base model); an unknown name is invalid_input."""
    if name is None:
        return None
    for lora_int_id, adapter in enumerate(adapters, start=1):
        if adapter.name == name:
            return LoRARequest(lora_name=adapter.name, lora_int_id=lora_int_id, lora_path=adapter.path)
    raise unknown_adapter(adapters, name, field)


def unknown_adapter(adapters: list[Adapter], name: str, field: str) -> JobError:
    if not adapters:
        return invalid_input(field, f"no LoRA adapter {name!r}: this endpoint serves none", "Leave the field out, or set LORA_MODULES on the endpoint.")
    names = ", ".join(repr(adapter.name) for adapter in adapters)
    return invalid_input(field, f"no LoRA adapter {name!r}; this endpoint serves {names}", "Use one of those names, or leave the field out for the base model.")
