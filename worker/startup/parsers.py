"""The one raising argparse parser: vLLM's FlexibleArgumentParser, raising ValueError where argparse would
print usage and exit the worker. Callers turn the ValueError into a configuration error naming their env var."""

from __future__ import annotations

from typing import NoReturn

from worker.vllm_api import FlexibleArgumentParser


class RaisingParser(FlexibleArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)
