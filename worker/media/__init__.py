"""Images in requests: the URL fetch policy and vLLM's media connector that enforces it."""
