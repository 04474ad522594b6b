"""Server-rendered pages: one job in full, the audit log, and the page for an address that
names nothing."""

from __future__ import annotations

import html
import json
from typing import Any

from .._time import ms_to_datetime
from ..artifacts.collect import refs_in
from ..job import CANCELLABLE_STATUSES, JobRecord, JobStatus


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<link rel='stylesheet' href='/static/dashboard.css'></head><body>"
            "<header><a href='/'>khadem_nb dashboard</a>"
            "<label>token <input id='token' type='password' autocomplete='off'></label></header>"
            f"<main>{body}</main><script src='/static/dashboard.js'></script></body></html>")


def _when(ms: int | None) -> str:
    moment = ms_to_datetime(ms)
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _block(label: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    return f"<h3>{html.escape(label)}</h3><pre class='{html.escape(label)}'>{html.escape(text)}</pre>"


def job_page(record: JobRecord) -> str:
    """One job: its fields, arguments, result, error, traceback and output, with the actions
    its status allows."""
    e = html.escape
    rows = [("id", record.id), ("job", record.name), ("queue", record.queue), ("status", record.status.value),
            ("attempts", f"{record.attempt} of {record.max_attempts}"), ("priority", record.priority),
            ("created", _when(record.created_ms)), ("due", _when(record.available_ms)),
            ("started", _when(record.started_ms)), ("finished", _when(record.finished_ms)),
            ("failure", record.failure or "-"), ("progress", record.meta.get("progress", "-")),
            ("note", record.meta.get("note") or "-")]
    table = "".join(f"<tr><th>{e(k)}</th><td class='{e(k)}'>{e(str(v))}</td></tr>" for k, v in rows)
    actions = []
    if record.status is JobStatus.FAILED:
        actions.append(f"<button data-action='/api/jobs/{e(record.id)}/retry'>Retry</button>")
    if record.status in CANCELLABLE_STATUSES:
        actions.append(f"<button data-action='/api/jobs/{e(record.id)}/cancel'>Cancel</button>")
    body = (f"<h1>{e(record.name)} <small>{e(record.id)}</small></h1>"
            f"<div class='actions'>{''.join(actions)}<span id='action-result'></span></div>"
            f"<table class='fields'>{table}</table>"
            + _block("arguments", record.payload) + _block("result", record.result) + _artifacts(record)
            + _block("error", record.error) + _block("traceback", record.traceback)
            + _block("output", record.meta.get("output")))
    return _page(f"{record.name} {record.id}", body)


def _artifacts(record: JobRecord) -> str:
    """The values the job keeps in the artifact store, each with a download link (a read of
    the dashboard like the others: token-guarded where reads are)."""
    refs = {ref.digest: ref for ref in refs_in([record.payload, record.result, record.meta])}
    if not refs:
        return ""
    e = html.escape
    items = "".join(f"<li><a class='artifact' href='/api/jobs/{e(record.id)}/artifacts/{e(digest)}'>"
                    f"{e(ref.describe())}</a> <code>{e(digest[:12])}</code></li>"
                    for digest, ref in refs.items())
    return f"<h3>artifacts</h3><ul class='artifacts'>{items}</ul>"


def not_found_page(job_id: str | None) -> str:
    what = "nothing here" if job_id is None else f"no job with id {job_id!r} in this queue"
    return _page("not found", f"<h1>Not found</h1><p class='not-found'>{html.escape(what)}: it may have "
                              "been removed by retention. <a href='/'>Back to the dashboard</a></p>")


def audit_page(entries: list[dict[str, Any]]) -> str:
    """The audit log, newest first: when, who (the token's role and fingerprint), what, on
    what, what came of it, from where."""
    e = html.escape
    head = "".join(f"<th>{name}</th>" for name in ("when", "who", "action", "target", "outcome", "from"))
    rows = "".join(
        f"<tr><td>{e(_when(entry.get('at_ms')))}</td><td>{e(str(entry.get('who', '')))}</td>"
        f"<td>{e(str(entry.get('action', '')))}</td><td>{e(str(entry.get('target', '')))}</td>"
        f"<td>{e(str(entry.get('outcome', '')))}</td><td>{e(str(entry.get('client', '')))}</td></tr>"
        for entry in entries)
    empty = "" if entries else "<p class='empty'>No action has been taken or refused yet.</p>"
    return _page("audit log", f"<h1>Audit log</h1><table class='audit'><tr>{head}</tr>{rows}</table>{empty}")
