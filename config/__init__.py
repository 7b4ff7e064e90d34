"""The worker's configuration: settings from env vars, their errors, secrets, and the official worker's names."""

from config.errors import SettingsError
from config.settings import WorkerSettings, load_settings

__all__ = ["SettingsError", "WorkerSettings", "load_settings"]
