"""GET /admin/pools: each pool of the rules being served, its members and their state right now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ascrm.core.pools.keeper import MemberState, PoolKeeper
from ascrm.core.rules.pools import Pool


async def pools_view(pools: dict[str, Pool] | Any, keeper: PoolKeeper | None, now: datetime) -> list[dict[str, Any]]:
    """Each pool: strategy, rest_after_busy, members with state (available, resting, off_schedule), the
    time a resting one is back, and offered/answered counts (StoreError when the keeper's store fails)."""
    out = []
    for pool in pools.values():
        states: tuple[MemberState, ...] = await keeper.states(pool) if keeper is not None else ()
        by_member = {state.to: state for state in states}
        members = []
        for member in pool.members:
            state = by_member.get(member.to, MemberState(member.to, None, 0, 0))
            off = member.hours is not None and not member.hours.contains(now)
            status = "off_schedule" if off else "resting" if state.resting_until is not None else "available"
            until = None
            if state.resting_until is not None:
                until = datetime.fromtimestamp(state.resting_until, UTC).isoformat(timespec="milliseconds")
            members.append(
                {
                    "to": member.to,
                    "weight": member.weight,
                    "time": member.schedule,
                    "state": status,
                    "resting_until": until,
                    "offered": state.offered,
                    "answered": state.answered,
                }
            )
        out.append(
            {"name": pool.name, "strategy": pool.strategy, "rest_after_busy": pool.rest_after_busy, "members": members}
        )
    return out
