"""A model's shape, from its config.json: what decides how it splits across GPUs and how much memory it needs.

`read_model_config` fetches only config.json (a local folder, a config.json path or a hub id), so a plan
can be made before any weights are downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ParallelismError(ValueError):
    """The model cannot run as configured on this pod; the message says what to change."""


class ModelConfigError(ParallelismError):
    """The model's config.json cannot be read."""


class ModelConfigUnavailable(ModelConfigError):
    """config.json is only on the hub and the hub cannot be reached now (offline, network, hub down): a passing
    condition, not a wrong model or token."""


def read_model_config(
    model: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """config.json of `model`: a local folder, a path to a config.json, or a Hugging Face hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _load_json(path / "config.json", model)
    if path.is_file():
        return _load_json(path, model)
    if model.startswith(("/", "./", "../", "~")) or model.endswith(".json"):
        raise ModelConfigError(f"MODEL_NAME={model!r}: no such folder or file on this machine.")
    return _load_json(Path(_download_config(model, revision, token, cache_dir)), model)


def _download_config(model: str, revision: str | None, token: str | None, cache_dir: str | None) -> str:
    # Imported here: huggingface_hub is only needed for hub ids, and the planner must import cheaply.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"MODEL_NAME={model!r}" + (f" (MODEL_REVISION={revision!r})" if revision else "")
    try:
        return hf_hub_download(model, "config.json", revision=revision, token=token, cache_dir=cache_dir)
    # Order matters: GatedRepoError is a RepositoryNotFoundError, LocalEntryNotFoundError an EntryNotFoundError.
    except GatedRepoError:
        raise ModelConfigError(
            f"{where} is gated: accept its license on huggingface.co and set HF_TOKEN to a token with access."
        ) from None
    except RepositoryNotFoundError:
        raise ModelConfigError(
            f"{where} was not found on the Hugging Face hub (or is private: set HF_TOKEN). "
            "Use an org/name repo id or a local folder with config.json."
        ) from None
    except RevisionNotFoundError:
        raise ModelConfigError(f"{where}: that revision does not exist; use a branch, tag or commit.") from None
    except LocalEntryNotFoundError:
        raise ModelConfigUnavailable(
            f"{where}: config.json could not be fetched from the hub and is not in the local cache "
            "(offline, or the hub is unreachable)."
        ) from None
    except EntryNotFoundError:
        raise ModelConfigError(f"{where} has no config.json: is it a transformers model repo?") from None
    except HFValidationError as error:
        raise ModelConfigError(f"{where} is not a valid hub id or an existing local path ({error}).") from None
    except OSError as error:  # network errors and HfHubHTTPError
        raise ModelConfigUnavailable(f"{where}: config.json could not be fetched from the hub ({error}).") from None


def _load_json(path: Path, model: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelConfigError(
            f"MODEL_NAME={model!r}: {path} does not exist (a model folder needs config.json)."
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelConfigError(f"MODEL_NAME={model!r}: cannot read {path} ({error}).") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"MODEL_NAME={model!r}: {path} is not a JSON object.")
    return config


@dataclass(frozen=True)
class WeightQuantization:
    """How a quantized checkpoint scales its linear weights: what limits the ways tensor parallelism can cut them.

    A scale covers a block (FP8: `block` = [block_n outputs, block_k inputs]) or a group of `group_size` inputs
    (AWQ/GPTQ). Where vLLM checks it (see worker.parallel), each GPU's share of a dimension that tensor
    parallelism splits must hold whole blocks or groups.
    """

    method: str
    block: tuple[int, int] | None = None
    group_size: int | None = None  # None: one scale per output channel, nothing to cut through

    def describe(self) -> str:
        if self.block:
            return f"{self.method} blocks {self.block[0]}x{self.block[1]}"
        return f"{self.method} groups of {self.group_size}" if self.group_size else self.method

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WeightQuantization | None":
        quant = config.get("quantization_config")
        if not isinstance(quant, dict):
            return None
        method = str(quant.get("quant_method") or "quantized").lower()
        if method == "compressed-tensors":
            weights = _compressed_tensors_weights(quant)
            block, group = weights.get("block_structure"), weights.get("group_size")
        else:
            block, group = quant.get("weight_block_size"), quant.get("group_size") or quant.get("q_group_size")
        return cls(
            method=method,
            block=(int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None,
            # -1 (or 0) means per-channel scales: no group to cut through.
            group_size=int(group) if group and int(group) > 0 else None,
        )


def _compressed_tensors_weights(quant: dict[str, Any]) -> dict[str, Any]:
    # llm-compressor puts the scheme under config_groups; every group of one checkpoint uses the same one.
    for group in (quant.get("config_groups") or {}).values():
        if isinstance(group, dict) and isinstance(group.get("weights"), dict):
            return group["weights"]
    return {}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that tensor parallelism and memory depend on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (0 when every layer is mixture-of-experts)
    vocab_size: int
    tie_word_embeddings: bool
    num_experts: int = 0  # routed experts per MoE layer; 0 for a dense model
    moe_intermediate_size: int = 0  # each expert's MLP width
    shared_expert_intermediate_size: int = 0  # Qwen-MoE style always-on expert
    qkv_bias: bool = False
    max_position_embeddings: int | None = None
    torch_dtype: str | None = None
    value_head_dim: int = 0  # MLA (DeepSeek): width of each head's value and output; 0 means head_dim
    quantization: WeightQuantization | None = None  # the checkpoint's own quantization_config

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def attention_output_size(self) -> int:
        """The input width of the attention output projection (o_proj), which TP splits by heads."""
        return self.num_heads * (self.value_head_dim or self.head_dim)

    def describe(self) -> str:
        mlp = (
            f"{self.num_experts} experts x MLP {self.moe_intermediate_size}"
            if self.is_moe
            else f"MLP {self.intermediate_size}"
        )
        quantized = f", {self.quantization.describe()}" if self.quantization else ""
        return f"{self.num_heads} attention heads, {self.num_kv_heads} KV heads, {mlp}{quantized}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelShape":
        # Multimodal configs keep the language model under text_config.
        text = config.get("text_config") if "num_attention_heads" not in config else None
        cfg = {**config, **text} if isinstance(text, dict) else config
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelConfigError(
                f"config.json lacks {error} (needs hidden_size, num_attention_heads, num_hidden_layers): "
                "only decoder-only transformer configs can be planned."
            ) from None
        # Models without GQA leave num_key_value_heads out: every head has its own K/V.
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
        intermediate = int(cfg.get("intermediate_size") or 0)
        # Mixtral names its expert width intermediate_size; Qwen-MoE/DeepSeek use moe_intermediate_size.
        moe_intermediate = int(cfg.get("moe_intermediate_size") or (intermediate if experts else 0))
        return cls(
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            # Dense layers inside MoE models (DeepSeek's first_k_dense_replace) are not modelled.
            intermediate_size=0 if experts else intermediate,
            vocab_size=int(cfg.get("vocab_size") or 0),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            num_experts=experts,
            moe_intermediate_size=moe_intermediate,
            shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0),
            # Qwen2 puts a bias on q/k/v; others say so with attention_bias.
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") in ("qwen2", "qwen2_moe"),
            max_position_embeddings=cfg.get("max_position_embeddings"),
            torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
            value_head_dim=int(cfg.get("v_head_dim") or 0),
            quantization=WeightQuantization.from_config(cfg),
        )
