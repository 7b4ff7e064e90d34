"""The engine's life: build it once, hand it to jobs, report its death, exit."""
