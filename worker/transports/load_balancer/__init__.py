"""ENDPOINT_TYPE=load_balancer: RunPod's load-balancing endpoints send HTTP requests straight to the worker, which
answers every route of the route table over HTTP (docs/load-balancing.md)."""
