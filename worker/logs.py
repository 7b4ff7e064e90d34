"""Logging for the worker's own modules (vLLM and the runpod SDK configure theirs)."""

import logging


def configure_logging(level: str = "INFO") -> None:
    """INFO until the settings are read (their errors must show), then WORKER_LOG_LEVEL."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
