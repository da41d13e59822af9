"""The SQL of `Store.prune`, shared by both stores: one DELETE per kind of record, each removing at most `BATCH`
rows so that a large first prune never holds the database for long; the store repeats each until it deletes fewer.

Placeholders are `?` (SQLite); `postgres_params` renumbers them as `$1, $2, ...`. Cut-offs are Unix seconds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from storage.base import RetentionPolicy

BATCH = 5000
DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class PruneStep:
    field: str  # the `PruneCounts` field it counts towards
    sql: str
    params: tuple[Any, ...]


def prune_steps(policy: RetentionPolicy, now: float | None = None) -> list[PruneStep]:
    """The deletes `policy` asks for as of `now`, children before the rows they hang on."""
    now = time.time() if now is None else now

    def cut(days: float) -> float:
        return now - days * DAY_SECONDS

    steps: list[PruneStep] = []
    if policy.runs_days:
        # runs and tool calls of turns that are delivered (or already pruned) and were last touched before the cut
        live = "SELECT id FROM turns WHERE state <> 'delivered' OR updated_at >= ?"
        steps += [
            PruneStep("runs", f"DELETE FROM runs WHERE remote_id IN (SELECT remote_id FROM runs WHERE updated_at < ?"
                              f" AND turn_id NOT IN ({live}) LIMIT {BATCH})",
                      (cut(policy.runs_days), cut(policy.runs_days))),
            PruneStep("tool_calls", "DELETE FROM tool_calls WHERE (turn_id, scope, call_id) IN (SELECT turn_id, scope,"
                                    f" call_id FROM tool_calls WHERE turn_id NOT IN ({live}) LIMIT {BATCH})",
                      (cut(policy.runs_days),)),
        ]
    if policy.inbox_days:
        steps += [
            PruneStep("inbox", "DELETE FROM inbox WHERE event_id IN (SELECT event_id FROM inbox WHERE state IN"
                               f" ('answered', 'notified') AND received_at < ? LIMIT {BATCH})",
                      (cut(policy.inbox_days),)),
            PruneStep("turns", "DELETE FROM turns WHERE id IN (SELECT id FROM turns WHERE state = 'delivered'"
                               " AND updated_at < ? AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.turn_id = turns.id)"
                               f" LIMIT {BATCH})",
                      (cut(policy.inbox_days),)),
            # who answered each turn and the transfers it made go with the turn (the state they led to stays)
            PruneStep("handoffs", "DELETE FROM turn_agents WHERE turn_id IN (SELECT turn_id FROM turn_agents a WHERE"
                                  f" NOT EXISTS (SELECT 1 FROM turns WHERE turns.id = a.turn_id) LIMIT {BATCH})", ()),
            PruneStep("handoffs", "DELETE FROM handoffs WHERE id IN (SELECT id FROM handoffs h WHERE h.turn_id IS NOT"
                                  " NULL AND h.at < ? AND NOT EXISTS (SELECT 1 FROM turns WHERE turns.id = h.turn_id)"
                                  f" LIMIT {BATCH})", (cut(policy.inbox_days),)),
        ]
    if policy.transcript_days:
        steps.append(PruneStep(
            "transcript", "DELETE FROM transcript WHERE id IN (SELECT t.id FROM transcript t JOIN conversations c"
                          " ON c.key = t.conversation WHERE t.created_at < ?"
                          f" AND (t.reset OR t.generation < c.generation) LIMIT {BATCH})",
            (cut(policy.transcript_days),)))
    if policy.audit_days:
        steps.append(PruneStep(
            "audit", f"DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? LIMIT {BATCH})",
            (cut(policy.audit_days),)))
    if policy.usage_days:  # `day` is the UTC date as text, as bot.access writes it: text order is date order
        steps.append(PruneStep(
            "usage", "DELETE FROM usage WHERE (day, bucket) IN (SELECT day, bucket FROM usage WHERE day < ?"
                     f" LIMIT {BATCH})",
            (time.strftime("%Y-%m-%d", time.gmtime(cut(policy.usage_days))),)))
    return steps


def postgres_sql(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$n`."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
