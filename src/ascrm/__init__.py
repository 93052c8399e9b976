"""ascrm: the CRM-side routing service for the Autosecretary cloud PBX.

The public names are imported on first use, so `import ascrm` (and `ascrm --version`) loads no web
framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ascrm.errors import AscrmError, ConfigError
    from ascrm.service.app import create_app
    from ascrm.service.settings import Settings, load_settings

_PUBLIC = {
    "AscrmError": "ascrm.errors",
    "ConfigError": "ascrm.errors",
    "Settings": "ascrm.service.settings",
    "create_app": "ascrm.service.app",
    "load_settings": "ascrm.service.settings",
}

__all__ = ["AscrmError", "ConfigError", "Settings", "__version__", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ascrm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
