"""The protocol's tables, written out so the tests do not borrow them from the code under test."""

from __future__ import annotations

ACTION_CODES = {
    "TransferDN": 1,
    "TransferEXT": 2,
    "PlayPrompt": 3,
    "Hangup": 4,
    "TransferPBX": 5,
    "PlayMenuBlock": 6,
    "PlayPromptAndBack": 7,
    "PlayPromptToOperator": 8,
    "TransferDNRec": 9,
    "TransferPBXRec": 10,
    "IgnorePromptToOperator": 11,
    "BackFromConsultCall": 12,
}
