"""How requests reach the worker: RunPod's queue (the runpod SDK), or direct HTTP on a load-balancing endpoint."""
