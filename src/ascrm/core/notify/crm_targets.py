"""The CRM preset targets, `bitrix24`, `amocrm` and `retailcrm`, compiled from a `targets:` entry.

Each takes the settings of the look-up preset of the same CRM (an admin configures a CRM once for both),
expanded from the environment (`${VAR}`, `${VAR:-default}`), and a few of its own. What each sends is told
in its module: core/notify/bitrix24.py, amocrm.py, retailcrm.py; the CRM-side set-up in
docs/notifications-crm.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from ascrm.core.notify.amocrm import AmoCrmTarget, compile_amocrm
from ascrm.core.notify.bitrix24 import Bitrix24Target, compile_bitrix24
from ascrm.core.notify.retailcrm import RetailCrmTarget, compile_retailcrm
from ascrm.core.notify.target import Target, TargetError
from ascrm.core.rules.excerpt import excerpt

__all__ = ["CRM_KINDS", "AmoCrmTarget", "Bitrix24Target", "RetailCrmTarget", "TargetError", "compile_crm_target"]

_COMPILERS: Final[Mapping[str, Callable[[str, Mapping[str, Any], Mapping[str, str]], Target]]] = {
    "bitrix24": compile_bitrix24,
    "amocrm": compile_amocrm,
    "retailcrm": compile_retailcrm,
}
CRM_KINDS: Final = tuple(_COMPILERS)


def compile_crm_target(name: str, kind: str, spec: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Target:
    """The target a `targets:` entry of a CRM kind describes; TargetError names the key at fault, never a
    secret's value (env: the environment ${VAR} is taken from, os.environ by default)."""
    compiler = _COMPILERS.get(kind)
    if compiler is None:
        raise TargetError(("kind",), f"unknown CRM kind {excerpt(kind)} (known: {', '.join(CRM_KINDS)})")
    return compiler(name, spec, os.environ if env is None else env)
