"""Serving: the one vLLM engine (engine), the job handler the runpod SDK calls (handler), native job input
(jobs, streaming, errors) and the OpenAI-compatible routes on vLLM's own serving layer (openai).

Boundary: vLLM is imported only through worker/vllm_api.py, so an upgrade has one place to look.
"""
