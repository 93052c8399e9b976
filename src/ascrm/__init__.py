"""ascrm: the CRM-side routing service for the Autosecretary cloud PBX."""

from ascrm.app import create_app
from ascrm.errors import AscrmError, ConfigError, ParamError
from ascrm.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "AscrmError",
    "ConfigError",
    "ParamError",
    "Settings",
    "__version__",
    "create_app",
    "load_settings",
]
