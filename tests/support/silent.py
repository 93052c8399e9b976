"""A CRM that never answers: a loopback socket whose connections the kernel accepts and nobody reads, and
rules that ask it (a source with a timeout, then a fallback rule that transfers to 1000)."""

from __future__ import annotations

SILENT_SOURCE_RULES = """
sources:
  owner:
    url: "http://127.0.0.1:{port}/owner?phone={{AN}}"
    value: extension
    timeout: {timeout}
rules:
  - id: personal
    on: CallAccepted
    if: {{owner: {{regex: "."}}}}
    do: {{TransferEXT: "{{owner}}"}}
  - id: fallback
    on: CallAccepted
    do: {{TransferEXT: "1000"}}
"""


def silent_source_rules(port: int, timeout: str) -> str:
    """Rules whose first rule asks the CRM on port (giving up after timeout, e.g. "150ms"), the next 1000."""
    return SILENT_SOURCE_RULES.format(port=port, timeout=timeout)
