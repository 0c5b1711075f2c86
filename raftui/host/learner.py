"""Adding a learner in host mode: the one sequence both the console's `a`
and a scenario's `add learner` run (no UI here)."""
from __future__ import annotations

import asyncio

from raftui.source import ActionResult, ClusterSource

from .base import ClusterHost, HostError


async def add_hosted_learner(source: ClusterSource, host: ClusterHost):
    """Pick ports for one more member, MemberAdd it as a learner, start the
    process that joins. Returns (the result, the started member or None);
    the result's data is the new member's name."""
    planned = await asyncio.to_thread(host.plan_member)
    added = await source.add_learner(planned.peer_url)
    if not added.ok:
        return added, None
    _, members = added.data
    try:
        started = await asyncio.to_thread(host.start_joining, planned, members)
    except (HostError, OSError) as exc:
        return ActionResult.fail(f"{added.text}, but its process did not start: {exc}"), None
    return (ActionResult(True, f"started learner {started.name} on {started.endpoint} "
                               f"(peer {started.peer_url})", started.name), started)
