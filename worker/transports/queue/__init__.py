"""RunPod queue endpoints: the runpod SDK's job loop, local test mode, fitness checks."""
