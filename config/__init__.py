from config.settings import SettingsError, WorkerSettings, load_settings

__all__ = ["SettingsError", "WorkerSettings", "load_settings"]
