"""Developer tools: the tiny and real test models, a RunPod API stand-in. Not in the image."""
