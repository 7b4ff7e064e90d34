"""Parallelism: which tensor/pipeline sizes a model can split into (rules), what each costs per GPU (memory),
which GPUs the pod has and how they are linked (gpus, topology), and the one decision of what to run or why
nothing fits (layout).

Boundary: pure planning, no torch and no vLLM, so `python -m worker.plan` runs on a laptop and the plan is
made before vLLM touches a GPU (tests/test_structure.py keeps it so).
"""
