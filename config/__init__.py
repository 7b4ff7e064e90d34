from config.errors import SettingsError
from config.settings import WorkerSettings, load_settings

__all__ = ["SettingsError", "WorkerSettings", "load_settings"]
