"""Benchmarks (`python -m bench`): the worker against vLLM itself. Not in the image."""
