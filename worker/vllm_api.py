"""Everything the worker takes from vLLM, in one place: a vLLM upgrade has one module to check.

Worker code imports vLLM only through here (tests/test_structure.py keeps it so). Names vLLM exports at its
top level are its public API; the rest are internals of vLLM 0.32 (`vllm serve`'s own building blocks)
that the worker relies on to answer routes exactly as `vllm serve` does.
"""

from vllm import PoolingParams, SamplingParams
from vllm import __version__ as vllm_version
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.anthropic.protocol import (
    AnthropicCountTokensRequest,
    AnthropicError,
    AnthropicErrorResponse,
    AnthropicMessagesRequest,
)
from vllm.entrypoints.launchers.api_server.app_state import init_app_state
from vllm.entrypoints.launchers.cli_args import (
    BaseFrontendArgs,
    make_arg_parser,
    validate_parsed_serve_args,
)
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.openai.models.protocol import LoRAModulePath
from vllm.entrypoints.openai.responses.api_router import (
    _convert_stream_to_sse_events as responses_sse_events,
)
from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
from vllm.entrypoints.pooling.classify.protocol import (
    ClassificationCompletionRequest,
    ClassificationRequest,
)
from vllm.entrypoints.pooling.embed.protocol import (
    CohereEmbedRequest,
    EmbeddingCompletionRequest,
    EmbeddingRequest,
)
from vllm.entrypoints.pooling.pooling.protocol import PoolingRequest
from vllm.entrypoints.pooling.scoring.protocol import RerankRequest, ScoreRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.exception_handling.error_response import (
    create_error_response,
)
from vllm.entrypoints.serve.exception_handling.handlers.validation import (
    clean_loc_for_param,
)
from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest, TokenizeRequest
from vllm.exceptions import VLLMValidationError
from vllm.logger import DEFAULT_LOGGING_CONFIG as VLLM_DEFAULT_LOGGING_CONFIG
from vllm.logprobs import Logprob
from vllm.lora.request import LoRARequest
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY, ImageMediaIO, MediaConnector
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.reasoning import ReasoningParserManager
from vllm.renderers.hf import resolve_chat_template_kwargs
from vllm.renderers.params import ChatParams
from vllm.sampling_params import RequestOutputKind
from vllm.tool_parsers import ToolParserManager
from vllm.usage.usage_lib import UsageContext
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.utils.cpu_resource_utils import get_cgroup_memory_limit, get_cgroup_memory_usage
from vllm.utils.gc_utils import freeze_gc_heap
from vllm.utils.import_utils import import_plugin
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.executor.multiproc_executor import MultiprocExecutor
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.prometheus import get_prometheus_registry
from vllm.v1.metrics.stats import SchedulerStats

__all__ = [
    "AnthropicCountTokensRequest",
    "AnthropicError",
    "AnthropicErrorResponse",
    "AnthropicMessagesRequest",
    "MEDIA_CONNECTOR_REGISTRY",
    "AsyncEngineArgs",
    "AsyncLLM",
    "BaseFrontendArgs",
    "ChatCompletionRequest",
    "ClassificationCompletionRequest",
    "ClassificationRequest",
    "CohereEmbedRequest",
    "ChatParams",
    "CompletionOutput",
    "CompletionRequest",
    "DetokenizeRequest",
    "EmbeddingCompletionRequest",
    "EmbeddingRequest",
    "EngineDeadError",
    "ErrorResponse",
    "FlexibleArgumentParser",
    "MultiprocExecutor",
    "Logprob",
    "PoolingParams",
    "PoolingRequest",
    "ImageMediaIO",
    "LoRAModulePath",
    "LoRARequest",
    "MediaConnector",
    "ReasoningParserManager",
    "RequestOutput",
    "RequestOutputKind",
    "RerankRequest",
    "ResponsesRequest",
    "SamplingParams",
    "SchedulerStats",
    "ScoreRequest",
    "StatLoggerBase",
    "TokenizeRequest",
    "ToolParserManager",
    "UsageContext",
    "VLLMValidationError",
    "VLLM_DEFAULT_LOGGING_CONFIG",
    "clean_loc_for_param",
    "create_error_response",
    "freeze_gc_heap",
    "get_prometheus_registry",
    "get_cgroup_memory_limit",
    "get_cgroup_memory_usage",
    "import_plugin",
    "init_app_state",
    "make_arg_parser",
    "resolve_chat_template_kwargs",
    "responses_sse_events",
    "validate_parsed_serve_args",
    "vllm_version",
]
