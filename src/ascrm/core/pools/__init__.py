"""Operator pools: a rule's `{pool.NAME}` picks one of a team's members, shared by every call."""
