"""Logging for the worker's own modules (vLLM and the runpod SDK configure theirs)."""

import logging
import os


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("WORKER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
