"""Start-up before any model file: the settings read and every check that needs no download (engine arguments
by vLLM's parser, the OpenAI server options), so a bad configuration stops the worker with exit code 2 and one
message naming each env var, before it takes a job."""

from __future__ import annotations

import logging
import sys

from config.errors import BAD_CONFIG_EXIT, SettingsError
from config.settings import WorkerSettings, load_settings
from worker.logs import configure_logging
from worker.startup.cluster import prepare_node
from worker.startup.engine_args import check_engine_args, typo_warnings
from worker.startup.server_args import server_args

log = logging.getLogger(__name__)


def checked_settings() -> WorkerSettings:
    """The settings, checked; on a bad configuration the worker exits 2. On a cluster, the node is prepared
    here too (nodes 1..N-1 run vLLM's headless workers in here and never return)."""
    configure_logging()
    try:
        settings = load_settings()
        configure_logging(settings.worker_log_level)
        log.info("settings: %s", settings.masked())
        if settings.in_cluster:
            prepare_node(settings)
        check_configuration(settings)
    except SettingsError as error:
        log.error("%s", error)
        sys.exit(BAD_CONFIG_EXIT)
    return settings


def check_configuration(settings: WorkerSettings) -> None:
    """Engine arguments (env vars and ENGINE_ARGS, by vLLM's parser) and the OpenAI server options. Raises
    SettingsError; logs the engine-argument env vars given and likely typos."""
    for typo in typo_warnings():
        log.warning("%s", typo)
    engine_env = check_engine_args(settings)
    if engine_env:
        log.info("engine arguments from env vars: %s", engine_env)
    server_args(settings, settings.model_name)
