"""Pooling models deployed with MODEL_NAME alone (tiny BERT embedder, cross-encoder and classifier made by
devtools/tiny_model.py): their routes through the official openai client and the RunPod-like gateway, the
native embed/classify/score jobs, and malformed bodies on every pooling route.

One engine per model, shared by the tests of its class and shut down after them (each costs ~20 s)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from devtools.tiny_model import make_tiny_pooling_model
from tests.helpers import FatalRecorder, job_error
from tests.helpers.openai_gateway import OpenAIGateway

TEXTS = [f"Sentence number {i}: tensor parallelism splits weights across GPUs." for i in range(64)]
DOCUMENTS = ["Paris is the capital of France.", "GPUs run tensor parallelism.", "Once upon a time."]


class Deployment:
    """One pooling model as a worker runs it: settings from MODEL_NAME alone, its engine, handler, gateway."""

    def __init__(self, loop, kind: str) -> None:
        from worker.engine.handle import EngineHandle
        from worker.jobs.dispatch import JobHandler

        self.loop = loop
        self.settings = load_settings(model_name=str(make_tiny_pooling_model(kind)), enforce_eager=True, max_concurrency=32)
        self.model = self.settings.served_name
        self.engine = EngineHandle(self.settings, on_fatal=FatalRecorder())
        self.jobs = JobHandler(self.settings, self.engine)
        self.gateway = OpenAIGateway(self.jobs.handle)
        loop.run_until_complete(self.gateway.start())
        self.client = openai.OpenAI(base_url=self.gateway.base_url, api_key="unused", max_retries=0, timeout=180)

    def run(self, job_input: Any) -> list[Any]:
        async def collect():
            return [c async for c in self.jobs.handle({"id": "pool", "input": job_input})]

        return self.loop.run_until_complete(asyncio.wait_for(collect(), 120))

    def route(self, route: str, body: Any) -> Any:
        chunks = self.run({"openai_route": route, "openai_input": body})
        assert len(chunks) == 1, chunks
        return chunks[0]

    def call(self, fn, *args, **kwargs):
        return self.loop.run_until_complete(asyncio.to_thread(fn, *args, **kwargs))

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.call(httpx.post, f"{self.gateway.root_url}{path}", json=body, timeout=180)

    def served(self) -> tuple[str, ...]:
        return self.loop.run_until_complete(self.jobs._routes()).served

    def close(self) -> None:
        self.loop.run_until_complete(self.gateway.stop())
        self.engine.shutdown()
        self.loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture(scope="class")
def embedder(loop):
    deployment = Deployment(loop, "embedding")
    yield deployment
    deployment.close()


@pytest.fixture(scope="class")
def cross_encoder(loop):
    deployment = Deployment(loop, "cross-encoder")
    yield deployment
    deployment.close()


@pytest.fixture(scope="class")
def classifier(loop):
    deployment = Deployment(loop, "classifier")
    yield deployment
    deployment.close()


def openai_error(chunk: dict) -> dict:
    return json.loads(chunk["error"])["error"]


# --- malformed bodies on the pooling routes ---------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
texts = st.one_of(st.text(max_size=30), st.lists(st.text(max_size=20), max_size=4), st.just("word " * 600), json_values)
pooling_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.just("MODEL"), json_scalars),
            "input": texts,
            "queries": texts,
            "documents": texts,
            "query": texts,
            "encoding_format": st.one_of(st.sampled_from(["float", "base64", "bytes", "nope"]), json_scalars),
            "dimensions": st.one_of(st.integers(-3, 300), json_scalars),
            "truncate_prompt_tokens": st.one_of(st.integers(-3, 2000), json_scalars),
            "top_n": st.one_of(st.integers(-3, 10), json_scalars),
            "bogus": json_values,
        },
    ),
)
native_pooling = st.fixed_dictionaries(
    {}, optional={"embed": texts, "classify": texts, "score": st.one_of(json_values, st.fixed_dictionaries({"query": texts, "documents": texts}))}
).filter(bool)
POOLING_ROUTES = ["/v1/embeddings", "/v2/embed", "/pooling", "/score", "/v1/rerank", "/classify", "/tokenize", "/v1/chat/completions"]


class TestEmbeddingModel:
    def test_model_name_alone_serves_the_embedding_routes_and_not_generation(self, embedder):
        served = embedder.served()
        assert {"/v1/embeddings", "/pooling", "/score", "/v1/rerank", "/tokenize", "/v1/models"} <= set(served)
        assert not {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/classify"} & set(served)

    def test_embeddings_create_float_and_base64_for_64_inputs(self, embedder):
        floats = embedder.call(embedder.client.embeddings.create, model=embedder.model, input=TEXTS)
        assert len(floats.data) == 64 and [d.index for d in floats.data] == list(range(64))
        vectors = np.array([d.embedding for d in floats.data])
        assert vectors.shape == (64, 128)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)  # vLLM normalizes embeddings
        assert floats.usage.prompt_tokens > 64
        # base64 as the raw HTTP body carries it (the openai client would decode it itself).
        response = embedder.post("/v1/embeddings", {"model": embedder.model, "input": TEXTS, "encoding_format": "base64"})
        assert response.status_code == 200
        decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32) for d in response.json()["data"]])
        assert np.allclose(decoded, vectors, atol=1e-4)
        # ... and through the client, asked for base64 (it hands the strings back as they came).
        client_b64 = embedder.call(embedder.client.embeddings.create, model=embedder.model, input=TEXTS[:4], encoding_format="base64")
        from_client = [np.frombuffer(base64.b64decode(d.embedding), dtype=np.float32) for d in client_b64.data]
        assert np.allclose(np.array(from_client), vectors[:4], atol=1e-4)

    def test_binary_encoding_is_refused_with_the_json_alternatives(self, embedder):
        error = openai_error(embedder.route("/v1/embeddings", {"model": embedder.model, "input": "hi", "encoding_format": "bytes"}))
        assert error["code"] == 400 and "base64" in error["message"]

    def test_chat_on_an_embedder_answers_404_naming_the_served_routes(self, embedder):
        with pytest.raises(openai.NotFoundError) as error:
            embedder.call(embedder.client.chat.completions.create, model=embedder.model, messages=[{"role": "user", "content": "hi"}])
        assert "/v1/embeddings" in error.value.message

    def test_native_embed_job_one_text_or_a_list_matches_the_route(self, embedder):
        (one,) = embedder.run({"embed": TEXTS[0]})
        assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 128
        assert one["usage"]["prompt_tokens"] > 0 and one["metrics"]["total_ms"] > 0
        (many,) = embedder.run({"embed": TEXTS[:5]})
        assert len(many["embeddings"]) == 5
        route = embedder.route("/v1/embeddings", {"model": embedder.model, "input": TEXTS[:5]})
        assert np.allclose(many["embeddings"], [d["embedding"] for d in route["data"]], atol=1e-5)
        assert np.allclose(one["embeddings"][0], many["embeddings"][0], atol=1e-4)

    @pytest.mark.parametrize(
        "job_input, field",
        [
            ({"embed": ""}, "input.embed"),
            ({"embed": []}, "input.embed"),
            ({"embed": ["ok", 5]}, "input.embed[1]"),
            ({"embed": "a", "classify": "b"}, "input"),
            ({"embed": "a", "extra": 1}, "input.extra"),
            ({"classify": "a text"}, "input.classify"),
            ({"prompt": "generate please"}, "input"),
            ({"embed": "word " * 2000}, "input.embed"),
        ],
    )
    def test_bad_native_pooling_jobs_name_the_field(self, embedder, job_input, field):
        error = job_error(embedder.run(job_input))
        assert error["type"] == "invalid_input" and error["fix"], error
        assert field in [f["field"] for f in error["fields"]], error

    def test_cosine_score_of_an_embedder(self, embedder):
        response = embedder.route("/score", {"model": embedder.model, "queries": "GPUs", "documents": DOCUMENTS})
        assert len(response["data"]) == 3 and all(-1.01 <= d["score"] <= 1.01 for d in response["data"])


    # malformed bodies on every pooling route, on this engine
    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(POOLING_ROUTES), body=pooling_bodies)
    def test_every_malformed_body_ends_as_the_routes_error_or_a_whole_response(self, embedder, route, body):
        if isinstance(body, dict) and body.get("model") == "MODEL":
            body = {**body, "model": embedder.model}
        chunk = embedder.route(route, body)
        if "error" in chunk:
            error = openai_error(chunk)
            assert error["code"] in (400, 404, 422) and error["message"], error
        else:
            assert "data" in chunk or "tokens" in chunk or "results" in chunk, chunk

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(job_input=native_pooling)
    def test_every_malformed_native_pooling_job_ends_as_a_structured_error_or_a_result(self, embedder, job_input):
        (chunk,) = embedder.run(job_input)
        if "error" in chunk:
            error = json.loads(chunk["error"])
            assert error["type"] == "invalid_input" and error["fields"][0]["field"].startswith("input"), error
        else:
            assert ("embeddings" in chunk or "scores" in chunk) and chunk["metrics"]["total_ms"] > 0

    def test_after_the_fuzzing_the_worker_still_embeds(self, embedder):
        (result,) = embedder.run({"embed": ["still here?"]})
        assert len(result["embeddings"][0]) == 128
        assert embedder.engine.engine.get_num_unfinished_requests() == 0

class TestCrossEncoder:
    def test_score_and_rerank_agree(self, cross_encoder):
        served = cross_encoder.served()
        assert {"/v1/score", "/score", "/v1/rerank", "/rerank", "/v2/rerank", "/classify"} <= set(served)
        score = cross_encoder.post("/v1/score", {"model": cross_encoder.model, "queries": "capital of France", "documents": DOCUMENTS})
        assert score.status_code == 200, score.text
        scores = [d["score"] for d in sorted(score.json()["data"], key=lambda d: d["index"])]
        assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            rerank = cross_encoder.post(path, {"model": cross_encoder.model, "query": "capital of France", "documents": DOCUMENTS})
            assert rerank.status_code == 200, rerank.text
            results = rerank.json()["results"]
            assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
            for r in results:
                assert math.isclose(r["relevance_score"], scores[r["index"]], rel_tol=1e-4)
                assert r["document"]["text"] == DOCUMENTS[r["index"]]

    def test_native_score_job_equals_the_score_route(self, cross_encoder):
        (result,) = cross_encoder.run({"score": {"query": "capital of France", "documents": DOCUMENTS}})
        route = cross_encoder.route("/score", {"model": cross_encoder.model, "queries": "capital of France", "documents": DOCUMENTS})
        assert np.allclose(result["scores"], [d["score"] for d in sorted(route["data"], key=lambda d: d["index"])], atol=1e-5)
        assert result["usage"]["prompt_tokens"] > 0

    def test_score_errors_are_openai_shaped(self, cross_encoder):
        response = cross_encoder.post("/v1/rerank", {"model": cross_encoder.model, "documents": DOCUMENTS})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "query"


class TestClassifier:
    def test_classify_gives_probabilities_and_labels(self, classifier):
        served = classifier.served()
        assert "/classify" in served and "/score" not in served, "scoring needs a single-label classifier"
        response = classifier.post("/classify", {"model": classifier.model, "input": ["I love it", "I hate it"]})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert len(data) == 2
        for item in data:
            assert item["num_classes"] == 3 and math.isclose(sum(item["probs"]), 1, abs_tol=1e-4)
            assert item["label"] == ["negative", "neutral", "positive"][int(np.argmax(item["probs"]))]

    def test_native_classify_job(self, classifier):
        (result,) = classifier.run({"classify": ["I love it", "I hate it"]})
        assert [c["label"] for c in result["classifications"]] and len(result["classifications"]) == 2
        error = job_error(classifier.run({"score": {"query": "q", "documents": ["d"]}}))
        assert error["fields"][0]["field"] == "input.score" and "/classify" in error["message"]

    def test_score_on_a_multi_label_classifier_answers_404(self, classifier):
        response = classifier.post("/v1/score", {"model": classifier.model, "queries": "q", "documents": ["d"]})
        assert response.status_code == 404 and "/classify" in response.json()["error"]["message"]
