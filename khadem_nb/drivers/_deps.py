"""Jobs that wait for others, in the SQL drivers (see ``dependencies``).

A table of edges (parent, child) holds the parents each waiting child still waits for. A
trigger on the jobs table acts on every change of a job into an ended status, whatever
statement makes it (a settle, a cancel, a lost lease), inside that statement's transaction: the
job's children are cancelled (a failed or cancelled parent, unless they run anyway) or, when it
was their last parent, queued; the cancel of a child runs the same trigger for its own children.
A child is judged against its parents in the transaction that stores it
(``dependencies.place_child``).
"""

from __future__ import annotations

from typing import Any

from ..job import JobRecord

ENDED_SQL = "('completed', 'failed', 'cancelled')"


def edges_table_sql(edges: str, index: str) -> list[str]:
    """The edges table and its index by child, named ``index`` (the parents a child still
    waits for)."""
    return [f"CREATE TABLE IF NOT EXISTS {edges} (parent TEXT NOT NULL, child TEXT NOT NULL, "
            "PRIMARY KEY (parent, child))",
            f"CREATE INDEX IF NOT EXISTS {index} ON {edges} (child)"]


def _reason_sql(parent: str) -> str:
    """The error of a child ended by ``parent`` (a row alias), as ``ended_reason`` words it."""
    return (f"'upstream job ' || {parent}.id || CASE {parent}.status WHEN 'failed' THEN ' failed' "
            "ELSE ' was cancelled' END || ' (was waiting)'")


def ended_steps_sql(jobs: str, edges: str, parent: str) -> list[str]:
    """The statements run when job ``parent`` (a row alias: NEW in a trigger) has ended: it
    waits for nothing now; its children that it ends are cancelled; those it was the last
    parent of are queued; its edges go."""
    return [
        f"DELETE FROM {edges} WHERE child = {parent}.id",
        f"UPDATE {jobs} SET status = 'cancelled', finished_ms = {parent}.finished_ms, token = NULL, "
        f"traceback = NULL, error = {_reason_sql(parent)} "
        f"WHERE {parent}.status <> 'completed' AND status = 'waiting' AND on_upstream_failure = 'cancel' "
        f"AND id IN (SELECT child FROM {edges} WHERE parent = {parent}.id)",
        f"UPDATE {jobs} SET status = 'queued' WHERE status = 'waiting' "
        f"AND id IN (SELECT child FROM {edges} WHERE parent = {parent}.id) "
        f"AND NOT EXISTS (SELECT 1 FROM {edges} e WHERE e.child = {jobs}.id AND e.parent <> {parent}.id)",
        f"DELETE FROM {edges} WHERE parent = {parent}.id",
    ]


def postgres_trigger_sql(schema: str, ready_channel: str, settled_channel: str, *,
                         marked_only: bool = True) -> list[str]:
    """The PostgreSQL trigger function and trigger: the same steps, which also tell waiters of
    each child cancelled (``settled_channel``) and idle workers of each queue that gained ready
    jobs (``ready_channel``). With ``marked_only`` (schema version 8 on) the trigger fires only
    for rows marked ``in_graph`` (a parent with children, or a child with parents): a job
    outside every workflow ends without running a statement of it."""
    jobs, edges = f"{schema}.jobs", f"{schema}.edges"
    waits, stops, releases, done = ended_steps_sql(jobs, edges, "NEW")
    return [
        f"""CREATE OR REPLACE FUNCTION {schema}.job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    found record;
BEGIN
    {waits};
    -- lock the children first: two parents of one child ending in two transactions at once
    -- would each still see the other's edge (read committed) and neither release it; the
    -- second now waits for the first to commit, and its next statements see that edge gone
    PERFORM 1 FROM {jobs} WHERE id IN (SELECT child FROM {edges} WHERE parent = NEW.id)
        ORDER BY id FOR UPDATE;
    FOR found IN WITH c AS ({stops} RETURNING id) SELECT id FROM c LOOP
        PERFORM pg_notify('{settled_channel}', found.id || E'\tcancelled');
    END LOOP;
    FOR found IN WITH q AS ({releases} RETURNING queue) SELECT DISTINCT queue FROM q LOOP
        PERFORM pg_notify('{ready_channel}', found.queue);
    END LOOP;
    {done};
    RETURN NULL;
END
$$""",
        f"DROP TRIGGER IF EXISTS jobs_ended ON {jobs}",
        f"CREATE TRIGGER jobs_ended AFTER UPDATE OF status ON {jobs} FOR EACH ROW "
        f"WHEN ({'NEW.in_graph AND ' if marked_only else ''}"
        f"NEW.status IN {ENDED_SQL} AND OLD.status NOT IN {ENDED_SQL}) "
        f"EXECUTE FUNCTION {schema}.job_ended()",
    ]


def sqlite_trigger_sql(jobs: str, edges: str) -> str:
    """The SQLite trigger (it needs ``PRAGMA recursive_triggers = ON`` for a cancelled child's
    own children)."""
    steps = ";\n  ".join(ended_steps_sql(jobs, edges, "NEW"))
    return (f"CREATE TRIGGER IF NOT EXISTS {jobs}_ended AFTER UPDATE OF status ON {jobs}\n"
            f"WHEN NEW.status IN {ENDED_SQL} AND OLD.status NOT IN {ENDED_SQL}\n"
            f"BEGIN\n  {steps};\nEND")


def edge_rows(record: JobRecord, left: list[str]) -> list[tuple[Any, ...]]:
    return [(parent, record.id) for parent in left]
