"""The ONE table of routes the worker answers as `openai_route` jobs, and what answers each.

Each route is a path `vllm serve` registers, the app-state attribute holding vLLM's serving object for it
(set by vLLM's `init_app_state` for the tasks the loaded model supports), the method of that object that
answers, and vLLM's request model for the body. A route is served for a model exactly when vLLM built its
serving object: a generative model gets chat, completions, Responses, Messages; an embedder gets embeddings,
pooling and score/rerank; a classifier gets /classify (and score/rerank with one label). Tokenize and
models are always there. Any other path answers 404 naming the routes served for the model, as
`vllm serve` answers 404 for a route it did not register.

README.md's route table is generated from this table (`scripts/routes_table.py --write`); tests keep
the two in step, and check every route vLLM registers is here or in NOT_SERVED with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import TypeAdapter

from worker.vllm_api import (
    AnthropicCountTokensRequest,
    AnthropicMessagesRequest,
    ChatCompletionRequest,
    ClassificationRequest,
    CohereEmbedRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    PoolingRequest,
    RerankRequest,
    ResponsesRequest,
    ScoreRequest,
    TokenizeRequest,
)

# Why the Responses API keeps no state here: a serverless fleet's workers share no memory, jobs land on
# any worker, and idle workers are stopped. So nothing is stored (vLLM's default, and the worker keeps it
# so even with VLLM_ENABLE_RESPONSES_API_STORE), and what needs a stored response is refused, saying why.
NO_STORED_RESPONSES = (
    "this RunPod worker stores no responses: jobs run on any worker of the endpoint, workers share no "
    "memory and are stopped when idle, so a response made by one job cannot be found by a later one"
)


@dataclass(frozen=True)
class Route:
    path: str  # as `vllm serve` registers it; {name} is a path parameter
    serving: str  # the app-state attribute holding vLLM's serving object
    method: str  # the serving object's method that answers ("__call__" for vLLM's pooling servings)
    request: Any = None  # vLLM's request model (a class or union) for the body; None: the route takes none
    dialect: Literal["openai", "anthropic"] = "openai"  # the error shape clients of this route parse
    # The stream event that carries the first token: events up to it go out at once (time to first token).
    first_token_event: int = 1
    refused: str | None = None  # why this worker answers the route with an error (see NO_STORED_RESPONSES)
    summary: str = ""

    @cached_property
    def adapter(self) -> TypeAdapter | None:
        return None if self.request is None else TypeAdapter(self.request)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$")


_SCORE = "Cross-encoder or embedding similarity of text pairs (vLLM's Score API)"
_RERANK = "Documents ranked by relevance to a query (Jina/Cohere rerank shape)"

ROUTES: tuple[Route, ...] = (
    Route("/v1/models", "openai_serving_models", "show_available_models", summary="The served model name"),
    Route("/v1/chat/completions", "openai_serving_chat", "create_chat_completion", ChatCompletionRequest,
          first_token_event=2, summary="Chat completions, streamed or not"),  # a chat stream opens with a role-only event
    Route("/v1/completions", "openai_serving_completion", "create_completion", CompletionRequest,
          summary="Text completions, streamed or not"),
    Route("/v1/responses", "openai_serving_responses", "create_responses", ResponsesRequest,
          # created, in_progress, output_item.added, content_part.added, then the first text delta
          first_token_event=5, summary="OpenAI Responses API, streamed or not; `store` and `previous_response_id` see below"),
    Route("/v1/responses/{response_id}", "openai_serving_responses", "retrieve_responses",
          refused=NO_STORED_RESPONSES, summary="Retrieve a stored response: refused (404), nothing is stored"),
    Route("/v1/responses/{response_id}/cancel", "openai_serving_responses", "cancel_responses",
          refused=NO_STORED_RESPONSES, summary="Cancel a background response: refused (404), nothing is stored"),
    Route("/v1/messages", "anthropic_serving_messages", "create_messages", AnthropicMessagesRequest,
          dialect="anthropic", first_token_event=3, summary="Anthropic Messages API, streamed (Anthropic's SSE events) or not"),
    Route("/v1/messages/count_tokens", "anthropic_serving_messages", "count_tokens", AnthropicCountTokensRequest,
          dialect="anthropic", summary="Anthropic token counting"),
    Route("/tokenize", "serving_tokenization", "create_tokenize", TokenizeRequest,
          summary="Prompt or chat messages -> token ids"),
    Route("/detokenize", "serving_tokenization", "create_detokenize", DetokenizeRequest,
          summary="Token ids -> text"),
    Route("/v1/embeddings", "serving_embedding", "__call__", EmbeddingRequest,
          summary="Embeddings (`encoding_format` float or base64) of an embedding model"),
    Route("/v2/embed", "serving_embedding", "__call__", CohereEmbedRequest,
          summary="Embeddings in Cohere's v2 shape"),
    Route("/pooling", "serving_pooling", "__call__", PoolingRequest,
          summary="Raw pooler output of any pooling model"),
    Route("/classify", "serving_classification", "__call__", ClassificationRequest,
          summary="Class probabilities of a classification model"),
    Route("/score", "serving_scores", "__call__", ScoreRequest, summary=_SCORE),
    Route("/v1/score", "serving_scores", "__call__", ScoreRequest, summary=_SCORE),
    Route("/rerank", "serving_scores", "__call__", RerankRequest, summary=_RERANK),
    Route("/v1/rerank", "serving_scores", "__call__", RerankRequest, summary=_RERANK),
    Route("/v2/rerank", "serving_scores", "__call__", RerankRequest, summary=_RERANK),
)

_SERVER = "an HTTP server's own route; a RunPod worker has no HTTP server (RunPod checks its health and scales it)"
_NOT_A_MODEL_ROUTE = "vLLM's cluster/disaggregated-serving internals, not a model API"
# Routes `vllm serve` registers that the worker does not answer, and why (tests/routes/test_routes.py checks the list).
NOT_SERVED: dict[str, str] = {
    **{path: _SERVER for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/load", "/version",
                                   "/health", "/metrics", "/ping", "/kv_event_sources", "/is_sleeping")},
    "/invocations": "SageMaker's single entry point; send the route itself as openai_route",
    **{path: _NOT_A_MODEL_ROUTE for path in ("/scale_elastic_ep", "/is_scaling_elastic_ep", "/inference/v1/generate",
                                             "/inference/v1/abort_requests")},
    **{path: "prompt rendering for disaggregated serving; /tokenize gives the token ids"
       for path in ("/v1/chat/completions/render", "/v1/messages/render", "/v1/completions/render",
                    "/v1/responses/render", "/v1/chat/completions/derender", "/v1/completions/derender")},
    "/v1/chat/completions/batch": "vLLM's offline-batch chat route; send one job per conversation (RunPod queues them)",
    "/generative_scoring": "experimental in vLLM 0.32; not yet wired",
    "/v1/systemone": "experimental structured-decisions route in vLLM 0.32; not yet wired",
    **{path: "audio routes take multipart file uploads, which a JSON job body cannot carry; not yet wired"
       for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/realtime")},
}


def find_route(path: Any) -> tuple[Route, dict[str, str]] | None:
    """The route for a job's openai_route, with its path parameters; None for an unknown path."""
    if not isinstance(path, str):
        return None
    for route in ROUTES:
        match = route.pattern.match(path)
        if match:
            return route, match.groupdict()
    return None


def routes_markdown() -> str:
    """README.md's route table (scripts/routes_table.py writes it there)."""
    rows = ["| `openai_route` | Served when the model | Answered by (vLLM) | What |", "| --- | --- | --- | --- |"]
    for route in ROUTES:
        method = "" if route.method == "__call__" else f".{route.method}"
        rows.append(f"| `{route.path}` | {_SERVED_WHEN[route.serving]} | `{route.serving}{method}` | {route.summary} |")
    return "\n".join(rows)


# When vLLM's init_app_state builds each serving object (README wording).
_SERVED_WHEN = {
    "openai_serving_models": "always",
    "serving_tokenization": "always",
    "openai_serving_chat": "generates text",
    "openai_serving_completion": "generates text",
    "openai_serving_responses": "generates text",
    "anthropic_serving_messages": "generates text",
    "serving_embedding": "embeds (e.g. `BertModel`, or `convert: embed`)",
    "serving_pooling": "pools (any embedder or classifier)",
    "serving_classification": "classifies (`*ForSequenceClassification`)",
    "serving_scores": "embeds, or classifies with one label (cross-encoder)",
}
