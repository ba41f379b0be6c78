from .plugin import PluginConfig  # noqa: F401
