"""The dashboard's web app (Starlette): a page, its JSON API, the job pages, actions and /metrics.

Reading needs no token when the dashboard serves loopback only; otherwise every request needs
a token (header ``X-Khadem-Token``, ``Authorization: Bearer``, or the cookie that ``/?token=``
sets): the admin token, or the read-only token when one is given (``--read-token``). Actions
always need the admin token in the ``X-Khadem-Token`` header: a header that another site's
page cannot send without a CORS preflight this app never grants, and a POST whose ``Origin`` is
not this dashboard is refused as well. Every action and every refused one is written to the
audit log (``audit``), shown at ``/audit`` and served at ``/api/audit``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._time import now_ms
from ..artifacts.collect import refs_in
from ..artifacts.refs import SUFFIXES
from ..artifacts.store import stores
from ..errors import KhademError
from ..features.search import parse_query
from ..manager import QueueManager
from ..ops.prometheus import QueueGauges, exposition, new_registry
from .audit import AuditEntry, AuditLog, fingerprint
from .overview import Overview, record_json
from .pages import audit_page, job_page, not_found_page
from .serve import is_loopback

TOKEN_HEADER = "x-khadem-token"
ADMIN, READ_ONLY = "admin", "read-only"  # what a token may do: act and read, or read only
TOKEN_COOKIE = "khadem_token"

Handler = Callable[[Request], Awaitable[Response]]
logger = logging.getLogger(__name__)


#: sent with every answer: no framing, no scripts or styles from elsewhere, no type sniffing,
#: no Referer (a job page's address names a job)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``Host`` headers the dashboard bound to ``host:port`` answers: on loopback only
    ``127.0.0.1``, ``localhost`` and ``[::1]`` with the port (so a page on another origin cannot
    read it through DNS rebinding), plus ``extra`` names; on other addresses the bound address
    and ``extra``, or any name (``None``) when bound to every address without ``extra`` (every
    request needs the token there)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    names = {shown, *extra}
    if is_loopback(host):
        names.update(LOOPBACK_NAMES)
    elif host in ("0.0.0.0", "::") and not extra:
        return None
    return frozenset(f"{name}:{port}" if not _has_port(name) else name for name in names) | (
        frozenset(names) if port == 80 else frozenset())


def _has_port(name: str) -> bool:
    return name.rsplit("]", 1)[-1].count(":") == 1 if name.startswith("[") else name.count(":") == 1


class Dashboard:
    """The state behind the routes: the manager, the token and the shared overview."""

    def __init__(self, manager: QueueManager, token: str, private_reads: bool,
                 hosts: frozenset[str] | None, read_token: str | None = None) -> None:
        self.manager = manager
        self.token = token
        self.read_token = read_token
        self.audit = AuditLog(manager.driver)
        self.private_reads = private_reads
        self.hosts = hosts
        self.overview = Overview(manager)
        self.registry = new_registry()
        self.gauges = QueueGauges(self.registry)

    # -- who may do what -----------------------------------------------------------------------
    def _given_token(self, request: Request) -> str | None:
        header = request.headers.get(TOKEN_HEADER)
        if header:
            return header
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return request.cookies.get(TOKEN_COOKIE)

    def _token_matches(self, given: str | None) -> bool:
        """Whether ``given`` is a token that may read: the admin or the read-only one."""
        return self._role(given) is not None

    def _role(self, given: str | None) -> str | None:
        """``"admin"`` for the admin token, ``"read-only"`` for the read-only one, else ``None``."""
        if given is None:
            return None
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return ADMIN
        if self.read_token is not None and hmac.compare_digest(given.encode(), self.read_token.encode()):
            return READ_ONLY
        return None

    def reading(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if self.private_reads and not self._token_matches(self._given_token(request)):
                return _refused("this dashboard serves other machines: reading needs its token "
                                "(open /?token=... once, or send X-Khadem-Token)", 401)
            return await handler(request)

        return guarded

    def host_refused(self, request: Request) -> Response | None:
        """A 421 answer for a request whose ``Host`` is not one this dashboard serves."""
        host = request.headers.get("host", "").lower()
        if self.hosts is None or host in self.hosts:
            return None
        return _refused(f"this dashboard does not answer to the host {host!r}; start it with "
                        "--allowed-host NAME to add a name it is reached by", 421)

    def own_origin(self, origin: str, request: Request) -> bool:
        """Whether ``origin`` is this dashboard's own page: a host it was bound to or allowed,
        never merely the host the request names (DNS rebinding makes that the attacker's)."""
        if self.hosts is None:  # any host, and every request needs the token
            return origin == f"{request.url.scheme}://{request.url.netloc}"
        scheme, _, host = origin.partition("://")
        return scheme in ("http", "https") and host.lower() in self.hosts

    def acting(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            given = request.headers.get(TOKEN_HEADER)
            role = self._role(given)
            who = f"{role} {fingerprint(given)}" if role and given else "wrong token" if given else "no token"
            refused = self._refusal(request, role)
            if refused is not None:
                await self._audit(request, who, refused)
                return refused
            try:
                response = await handler(request)
            except KhademError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=400)
            await self._audit(request, who, response)
            return response

        return guarded

    def _refusal(self, request: Request, role: str | None) -> Response | None:
        """Why an action is refused (an answer to send), or ``None``: it may go on."""
        origin = request.headers.get("origin")
        if origin is not None and not self.own_origin(origin, request):
            return _refused(f"actions come from this dashboard's own page, not from {origin}", 403)
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _refused("actions come from this dashboard's own page", 403)
        if role == READ_ONLY:
            return _refused("this token may read the queue, not act on it: actions need the admin token", 403)
        if role != ADMIN:
            return _refused("actions need the dashboard's token in the X-Khadem-Token header "
                            "(printed when the dashboard started)", 403)
        return None

    async def _audit(self, request: Request, who: str, response: Response) -> None:
        """Write what an action did (or why it was refused) to the audit log; a log that cannot
        be written is logged and never stops the action."""
        outcome = bytes(response.body).decode(errors="replace")[:300]
        verdict = "refused" if response.status_code in (401, 403) else str(response.status_code)
        target = " ".join(str(v) for v in request.path_params.values())
        client = request.client.host if request.client else ""
        entry = AuditEntry(now_ms(), who, f"{request.method} {request.url.path}", target,
                           f"{verdict}: {outcome}", client)
        try:
            await self.audit.record(entry)
        except Exception:
            logger.exception("the dashboard could not write its audit entry %r", entry)

    # -- pages and reads -----------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:  # a login link: keep the token in a cookie, drop it from the URL
            if not self._token_matches(given):
                return _refused("wrong token", 403)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
            return response
        if self.private_reads and not self._token_matches(self._given_token(request)):
            return _refused("this dashboard serves other machines: open /?token=... with its token", 401)
        return HTMLResponse(_static_text("index.html"))

    async def overview_json(self, request: Request) -> Response:
        return JSONResponse(await self.overview.read())

    async def search(self, request: Request) -> Response:
        """Jobs by ``q`` (an id, or part of a job name) and the conditions of
        ``features.search.parse_query`` (status, name, queue, since, until, error, arg, before,
        limit), newest first, a page at a time; ``next`` is the cursor of the next page."""
        params = request.query_params
        try:
            query = parse_query(params, params.getlist("arg"))
        except KhademError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        exact = await self.manager.driver.get(query.text) if query.text and query.before is None else None
        if exact is not None and query.matches(exact):  # an id: that job, wherever it is
            return JSONResponse({"jobs": [_row(exact)], "next": None, "looked_through": None})
        try:
            page = await self.manager.driver.search(query)
        except KhademError as exc:  # a cursor this driver did not make
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"jobs": [_row(r) for r in page.records], "next": page.next,
                             "looked_through": page.looked_through})

    async def job_json(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        record = await self.manager.driver.get(job_id)
        if record is None:
            return JSONResponse({"error": f"no job with id {job_id!r}"}, status_code=404)
        return JSONResponse(record_json(record))

    async def job_html(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        record = await self.manager.driver.get(job_id)
        if record is None:
            return HTMLResponse(not_found_page(job_id), status_code=404)
        return HTMLResponse(job_page(record))

    async def artifact(self, request: Request) -> Response:
        """The bytes of one artifact the job refers to (checked against its digest first);
        digests the job does not refer to are not served."""
        job_id, digest = request.path_params["job_id"], request.path_params["digest"]
        record = await self.manager.driver.get(job_id)
        if record is None:
            return JSONResponse({"error": f"no job with id {job_id!r}"}, status_code=404)
        found = [ref for ref in refs_in([record.payload, record.result, record.meta]) if ref.digest == digest]
        if not found:
            return JSONResponse({"error": f"job {job_id} refers to no artifact {digest!r}"}, status_code=404)
        ref = found[0]
        try:
            path = await asyncio.to_thread(lambda: stores.store_of(ref).local_file(ref))
        except KhademError as exc:
            return JSONResponse({"error": str(exc)}, status_code=502)
        name = ref.name or f"{ref.digest}{SUFFIXES[ref.kind]}"
        return FileResponse(path, filename=name, media_type="application/octet-stream")

    async def audit_json(self, request: Request) -> Response:
        return JSONResponse({"entries": await self.audit.newest()})

    async def audit_html(self, request: Request) -> Response:
        return HTMLResponse(audit_page(await self.audit.newest()))

    async def metrics(self, request: Request) -> Response:
        await self.gauges.refresh(self.manager)
        body, content_type = exposition(self.registry)
        return Response(body, media_type=content_type)

    # -- actions -------------------------------------------------------------------------------
    async def retry(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if await self.manager.driver.get(job_id) is None:
            return JSONResponse({"error": f"no job with id {job_id!r}"}, status_code=404)
        return JSONResponse({"requeued": await self.manager.retry_failed([job_id])})

    async def cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        cancelled = await self.manager.cancel(job_id, reason="cancelled from the dashboard")
        return JSONResponse({"cancelled": cancelled})

    async def retry_all_failed(self, request: Request) -> Response:
        return JSONResponse({"requeued": await self.manager.retry_failed()})

    async def purge_failed(self, request: Request) -> Response:
        return JSONResponse({"deleted": await self.manager.purge_failed()})

    async def pause_queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        await self.manager.pause_queue(queue)
        self.overview.forget()
        return JSONResponse({"paused": queue})

    async def resume_queue(self, request: Request) -> Response:
        resumed = await self.manager.resume_queue(request.path_params["queue"])
        self.overview.forget()
        return JSONResponse({"resumed": resumed})


def create_app(manager: QueueManager, token: str, *, private_reads: bool = False,
               hosts: frozenset[str] | None = None, read_token: str | None = None) -> Starlette:
    """The dashboard of ``manager``'s queue (an initialised manager, closed by its owner),
    answering requests whose ``Host`` is in ``hosts`` (see ``allowed_hosts``; ``None``: any);
    ``read_token`` reads (where reads need a token) and never acts."""
    board = Dashboard(manager, token, private_reads, hosts, read_token)
    read, act = board.reading, board.acting
    routes = [
        Route("/", board.index),
        Route("/api/overview", read(board.overview_json)),
        Route("/api/jobs", read(board.search)),
        Route("/api/jobs/{job_id}", read(board.job_json)),
        Route("/jobs/{job_id}", read(board.job_html)),
        Route("/api/jobs/{job_id}/artifacts/{digest}", read(board.artifact)),
        Route("/metrics", read(board.metrics)),
        Route("/audit", read(board.audit_html)),
        Route("/api/audit", read(board.audit_json)),
        Route("/api/jobs/{job_id}/retry", act(board.retry), methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", act(board.cancel), methods=["POST"]),
        Route("/api/failed/retry", act(board.retry_all_failed), methods=["POST"]),
        Route("/api/failed/purge", act(board.purge_failed), methods=["POST"]),
        Route("/api/queues/{queue}/pause", act(board.pause_queue), methods=["POST"]),
        Route("/api/queues/{queue}/resume", act(board.resume_queue), methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("khadem_nb.dashboard", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found})
    app.state.dashboard = board
    app.add_middleware(_Guard, board=board)
    return app


class _Guard:
    """ASGI middleware: refuses a foreign ``Host`` before any route runs, and adds
    ``SECURITY_HEADERS`` to every answer."""

    def __init__(self, app: ASGIApp, board: Dashboard) -> None:
        self.app = app
        self.board = board

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.board.host_refused(Request(scope))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await (refused or self.app)(scope, receive, send_with_headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": f"no such address: {request.url.path}"}, status_code=404)
    return HTMLResponse(not_found_page(None), status_code=404)


def _refused(reason: str, status: int) -> Response:
    return JSONResponse({"error": reason}, status_code=status)


def _row(record: Any) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "queue": record.queue, "status": record.status.value,
            "attempt": record.attempt, "created_ms": record.created_ms, "finished_ms": record.finished_ms,
            "error": record.error}


def _static_text(name: str) -> str:
    return (resources.files("khadem_nb.dashboard") / "static" / name).read_text(encoding="utf-8")
