"""How requests reach the worker: RunPod's queue (the runpod SDK)."""
