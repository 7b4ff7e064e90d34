"""vLLM's HTTP routes answered in-process by vLLM's own serving classes: the route table, checks, error bodies."""
