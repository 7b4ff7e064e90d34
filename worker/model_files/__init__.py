"""Model files: where vLLM loads MODEL_NAME from (a local folder, the image's baked copy, the cache, the hub),
config.json included, with one description of every hub failure and one token accessor (settings.hub_token).

Boundary: this package imports neither torch nor vLLM. The Dockerfile's bake layer runs
`python -m worker.model_files.download --bake` before the worker's code and vLLM's weight loading matter,
and `python -m worker.plan` reads config.json through it on a laptop (tests/test_structure.py keeps both true).
"""
