"""The FastAPI application: endpoints, bearer-token authorization, per-request role.

Each data request is one transaction: the token's hash is looked up
(tenancy.api_token_role; no tenant row is read for an unknown token, which
gets 401), the per-token rate limit is counted (429 + Retry-After past it),
then ``SET LOCAL ROLE <token's role>`` and the endpoint's queries run, so
row-level security and the tenant.* views decide what is visible. An id the role
cannot see is 404, exactly like an id that does not exist.

(No `from __future__ import annotations` here: FastAPI must evaluate the
local ``Role`` dependency annotation when each endpoint is defined.)
"""


import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar
from urllib.parse import urlencode

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response
from psycopg import sql
from psycopg_pool import ConnectionPool

from api import responses, series, tokens
from api.ratelimit import RateLimiter

log = logging.getLogger("rmp.api")

MAX_ID = 2**63 - 1
DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
STATEMENT_TIMEOUT = "30s"
T = TypeVar("T")

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="numeric id")]
# The window and paging parameters every series endpoint takes.
Start = Annotated[datetime | None, Query(description="inclusive; default end - 24 h")]
End = Annotated[datetime | None, Query(description="exclusive; default now")]
Limit = Annotated[int, Query(ge=1, le=MAX_POINTS, description="rows (points, anomalies) per page")]
After = Annotated[datetime | None, Query(description="keyset: the last time of the previous page")]


@dataclass(frozen=True)
class ApiSettings:
    database_url: str
    requests_per_minute: int = 600
    pool_size: int = 4


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def create_app(settings: ApiSettings) -> FastAPI:
    # check: a connection the server dropped (restart, idle timeout) is replaced before use
    pool = ConnectionPool(settings.database_url, min_size=1, max_size=settings.pool_size, open=False,
                          name="rmp-api", check=ConnectionPool.check_connection)
    limiter = RateLimiter(settings.requests_per_minute)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="Resource Metrics Platform API",
        summary="Read-only server and organization metrics, anomalies, forecasts and quotas.",
        description=(
            "Authorize with `Authorization: Bearer <token>` (`rmp api token create ROLE`). Every request "
            "runs as the token's database role, so it sees only its organizations. JSON by default, CSV "
            f"with `Accept: text/csv`. At most {settings.requests_per_minute} requests per minute per "
            "token (429 with Retry-After beyond)."),
        version="1",
        lifespan=lifespan,
    )

    # ---------------------------------------------------------------- plumbing

    def caller(request: Request) -> str:
        """The request's bearer token (401 without one); checked by ``as_role``."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        return token

    Role = Annotated[str, Depends(caller)]

    def as_role(token: str, work: Callable[[psycopg.Connection], T]) -> T:
        """Run ``work`` in one transaction as the token's role: look the token up (401 when unknown or
        revoked: nothing else has been read), count it against the rate limit (429), SET LOCAL ROLE."""
        for attempt in (1, 2):
            try:
                return _as_role_once(token, work, count=attempt == 1)
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
                # a read that met a concurrent aggregate refresh: once more, then give up (503)
                if attempt == 2:
                    raise HTTPException(503, "the database was busy; try again",
                                        headers={"Retry-After": "1"}) from exc
                log.info("retrying after %s", type(exc).__name__)
        raise AssertionError("unreachable")

    def _as_role_once(token: str, work: Callable[[psycopg.Connection], T], count: bool) -> T:
        try:
            with pool.connection() as conn, conn.transaction():
                role = tokens.role_for(conn, token)
                if role is None:
                    raise HTTPException(401, "unknown or revoked token",
                                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
                wait = limiter.check(tokens.digest(token)) if count else None   # a retry is not a new request
                if wait is not None:
                    raise HTTPException(429, f"more than {settings.requests_per_minute} requests in a minute",
                                        headers={"Retry-After": str(wait)})
                # set_config(..., true) is SET LOCAL: all end with this transaction. UTC: the
                # timestamps PostgreSQL renders into JSON read +00:00 like the rest of the API.
                conn.execute("select set_config('role', %s, true), set_config('statement_timeout', %s, true),"
                             " set_config('TimeZone', 'UTC', true)", (role, STATEMENT_TIMEOUT))
                return work(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("token role refused: %s", str(exc).splitlines()[0])
            raise HTTPException(403, "this token's role may not read this") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise HTTPException(503, "the query took too long; ask for a shorter range",
                                headers={"Retry-After": "10"}) from exc

    def visible(conn: psycopg.Connection, relation: str, object_id: int, what: str) -> None:
        found = conn.execute(sql.SQL("select 1 from {} where id = %s").format(sql.SQL(relation)),
                             (object_id,)).fetchone()
        if found is None:
            raise HTTPException(404, f"no {what} {object_id}")

    def mart_rows(role: str, mart: str, what: str, object_id: int, columns: list[str],
                  order_by: str | None = None) -> list[tuple]:
        """A mart's rows of one server or organization (``what``: its key is ``<what>_id``), as the
        token's role; 404 when that role cannot see the server or organization."""
        query = sql.SQL("select {} from {} where {} = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier("marts", mart),
            sql.Identifier(f"{what}_id"))
        if order_by:
            query += sql.SQL(" order by {}").format(sql.Identifier(order_by))

        def work(conn):
            visible(conn, f"tenancy.{what}s", object_id, what)
            return conn.execute(query, (object_id,)).fetchall()

        return as_role(role, work)

    def refresh_of(conn: psycopg.Connection, aggregate: str | None) -> tuple[datetime | None, int | None]:
        """(last refresh, seconds until the next) of a continuous aggregate: Last-Modified and max-age."""
        if aggregate is None:
            return None, None
        row = conn.execute("select refreshed_at, next_refresh_at from tenant.aggregate_refreshes()"
                           " where aggregate_name = %s", (aggregate,)).fetchone()
        if row is None or row[1] is None:
            return (row[0] if row else None), None
        return row[0], max(0, int((row[1] - datetime.now(UTC)).total_seconds()))

    def window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        end = _utc(end) or datetime.now(UTC)
        start = _utc(start) or end - timedelta(hours=24)
        if start >= end:
            raise HTTPException(422, "start must be before end")
        return start, end

    def next_link(request: Request, after: datetime) -> str:
        params = dict(request.query_params)
        params["after"] = after.isoformat()
        return f"{request.url.path}?{urlencode(params)}"

    def series_page(conn: psycopg.Connection, relation: str, time_column: str, columns: list[str],
                    key_column: str, key: int, start: datetime, end: datetime, after: datetime | None,
                    limit: int, as_json: bool) -> tuple[list[tuple] | str, datetime | None]:
        """One keyset page of a time series: rows with time in [start, end) after ``after``, oldest first,
        and the time to continue after (None on the last page). With ``as_json`` the page comes back as
        one JSON array built by PostgreSQL (json_agg): rendering 1,000 points in Python cost more than
        the query itself."""
        t = sql.Identifier(time_column)
        page = sql.SQL(
            "select {t} as time, {cols} from {rel} where {key} = %(key)s and {t} >= %(start)s and {t} < %(end)s"
            " and (%(after)s::timestamptz is null or {t} > %(after)s::timestamptz)"
            " order by {t} limit %(limit)s"
        ).format(t=t, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), rel=sql.SQL(relation),
                 key=sql.Identifier(key_column))
        params = {"key": key, "start": start, "end": end, "after": after, "limit": limit + 1, "shown": limit}
        if as_json:
            points, has_more, last = conn.execute(sql.SQL(
                "with page as ({}), shown as (select * from page order by time limit %(shown)s)"
                " select (select coalesce(json_agg(shown order by shown.time), '[]'::json) from shown)::text,"
                " (select count(*) from page) > %(shown)s, (select max(time) from shown)").format(page),
                params).fetchone()
            return points, last if has_more else None
        rows = conn.execute(page, params).fetchall()
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1][0]
        return rows, None

    def series_response(request: Request, role: str, what: str, object_id: int,
                        source: tuple[str, str, str | None], columns: list[str], start: datetime, end: datetime,
                        after: datetime | None, limit: int, envelope: dict) -> Response:
        """One page of a server's or organization's series (``what``: its key is ``<what>_id``) as the token's
        role, dated by the refresh of the aggregate it comes from. ``source``: (relation, time column,
        aggregate or None)."""
        relation, time_column, aggregate = source
        as_json = responses.media_type(request) == responses.JSON

        def work(conn):
            visible(conn, f"tenancy.{what}s", object_id, what)
            rows, more = series_page(conn, relation, time_column, columns, f"{what}_id", object_id,
                                     start, end, _utc(after), limit, as_json)
            return rows, more, refresh_of(conn, aggregate)

        rows, more, (refreshed, max_age) = as_role(role, work)
        envelope = {f"{what}_id": object_id, **envelope, "start": start, "end": end, "next_after": more}
        return responses.render(request, ["time", *columns], rows, envelope, refreshed_at=refreshed,
                                max_age=max_age, links={"next": next_link(request, more)} if more else None,
                                points_json=rows if as_json else None)

    # --------------------------------------------------------------- endpoints

    @app.get("/servers/{server_id}/metrics", tags=["servers"])
    def server_metrics(
        request: Request, role: Role, server_id: Id,
        start: Start = None,
        end: End = None,
        granularity: Annotated[series.ServerGranularity | None, Query(
            description=series.DEFAULT_GRANULARITY_RULE)] = None,
        limit: Limit = DEFAULT_POINTS,
        after: After = None,
    ) -> Response:
        """One server's metrics from the raw hypertable or an aggregate tier, oldest first, paged by time."""
        start, end = window(start, end)
        tier = str(granularity) if granularity else series.default_granularity(end - start)
        columns = series.RAW_COLUMNS if tier == "raw" else series.AGGREGATE_COLUMNS
        return series_response(request, role, "server", server_id, series.SERVER_TIERS[tier], columns,
                               start, end, after, limit, {"granularity": tier})

    @app.get("/organizations/{organization_id}/metrics", tags=["organizations"])
    def organization_metrics(
        request: Request, role: Role, organization_id: Id,
        start: Start = None,
        end: End = None,
        granularity: Annotated[series.OrganizationGranularity | None, Query(
            description=series.DEFAULT_GRANULARITY_RULE + " (for organizations the next tier with a mart)")] = None,
        include_children: Annotated[bool, Query(description="also every sub-organization's servers")] = False,
        limit: Limit = DEFAULT_POINTS,
        after: After = None,
    ) -> Response:
        """An organization's series (its servers, or its whole subtree) from the organization marts."""
        start, end = window(start, end)
        tier = str(granularity) if granularity else series.default_granularity(end - start, organization=True)
        return series_response(request, role, "organization", organization_id,
                               series.ORGANIZATION_TIERS[(tier, include_children)], series.ORGANIZATION_COLUMNS,
                               start, end, after, limit, {"granularity": tier, "include_children": include_children})

    @app.get("/servers/{server_id}/anomalies", tags=["servers"])
    def server_anomalies(
        request: Request, role: Role, server_id: Id,
        since: Annotated[datetime | None, Query(description="started at or after; default 7 days ago")] = None,
        limit: Limit = DEFAULT_POINTS,
    ) -> Response:
        """Anomalies the analytics package stored for one server, newest first."""
        since = _utc(since) or datetime.now(UTC) - timedelta(days=7)
        columns = series.ANOMALY_COLUMNS

        def work(conn):
            visible(conn, "tenancy.servers", server_id, "server")
            return conn.execute(
                sql.SQL("select {} from analytics.anomalies where server_id = %s and started_at >= %s"
                        " order by started_at desc, metric, detector limit %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns))),
                (server_id, since, limit)).fetchall()

        rows = as_role(role, work)
        return responses.render(request, columns, rows, {"server_id": server_id, "since": since},
                                key="anomalies")

    @app.get("/servers/{server_id}/forecast", tags=["servers"])
    def server_forecast(
        request: Request, role: Role, server_id: Id,
        metric: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="e.g. disk_percent")],
        days: Annotated[int, Query(ge=1, le=30, description="days of the stored forecast to return")] = 7,
    ) -> Response:
        """The latest stored forecast of one server's metric, its first ``days`` days."""
        columns = ["at", "yhat", "lo", "hi"]

        def work(conn):
            visible(conn, "tenancy.servers", server_id, "server")
            head = conn.execute(
                "select id, model, horizon_start, trend, slope_per_day, threshold, threshold_crossing_at,"
                " is_above_threshold, status, created_at from analytics.forecasts"
                " where entity_type = 'server' and entity_id = %s and metric = %s"
                " order by horizon_start desc limit 1", (server_id, metric)).fetchone()
            if head is None:
                raise HTTPException(404, f"no stored forecast of {metric} for server {server_id}")
            points = conn.execute(
                "select (p ->> 'at')::timestamptz, (p ->> 'yhat')::float8, (p ->> 'lo')::float8,"
                " (p ->> 'hi')::float8 from analytics.forecasts f, jsonb_array_elements(f.forecast) p"
                " where f.id = %s and (p ->> 'at')::timestamptz < f.horizon_start + make_interval(days => %s)"
                " order by 1", (head[0], days)).fetchall()
            return head, points

        head, points = as_role(role, work)
        envelope = {"server_id": server_id, "metric": metric, "days": days, "model": head[1],
                    "horizon_start": head[2], "trend": head[3], "slope_per_day": head[4], "threshold": head[5],
                    "threshold_crossing_at": head[6], "is_above_threshold": head[7], "status": head[8],
                    "created_at": head[9]}
        return responses.render(request, columns, points, envelope)

    @app.get("/organizations/{organization_id}/quota", tags=["organizations"])
    def organization_quota(request: Request, role: Role, organization_id: Id) -> Response:
        """The organization's quotas (marts.org_quota_status): both the precise and the panel's meaning."""
        columns = series.QUOTA_COLUMNS
        rows = mart_rows(role, "org_quota_status", "organization", organization_id, columns, order_by="quota_name")
        return responses.render(request, columns, rows, {"organization_id": organization_id}, key="quotas")

    @app.get("/servers/{server_id}/current", tags=["servers"])
    def server_current(request: Request, role: Role, server_id: Id) -> Response:
        """The server's latest sample and staleness (marts.server_current)."""
        columns = series.CURRENT_COLUMNS
        rows = mart_rows(role, "server_current", "server", server_id, columns)
        if not rows:
            raise HTTPException(404, f"server {server_id} has reported no metrics")
        return responses.render(request, columns, rows, None, single=True)

    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn api.app:app_from_environment --factory`: settings from RMP_API_* / DATABASE_URL."""
    import os

    from rmp import db

    url = os.environ.get("RMP_API_DATABASE_URL") or db.read_database_url()
    return create_app(ApiSettings(url, int(os.environ.get("RMP_API_RATE_LIMIT", "600"))))


