"""Elasticsearch: `_bulk` in, per-item answers out, and the handshakes clients make before sending.

Served at the root (Filebeat, Logstash, Elastic Agent, Fluent Bit `es`, Vector and the Python
client all talk to a cluster's root; Fluent Bit and Vector can set a path prefix, which the
source's `path` serves too). Every answer carries `X-Elastic-Product: Elasticsearch`: the
official clients (Python 8+/9, and what Beats use) refuse a server without it.

`GET /` answers a 9.x version: clients check it is not too old for them (Beats, Logstash), pick
their API by its major (Vector) or want it to match their compatible-with header (Python 9).
Template, ILM, data-stream and pipeline calls are acknowledged and said to exist, so clients
go on to send instead of failing their set-up; the relay keeps none of them.

`_bulk` answers 200 with a status per item after the durable commit: 201 for a document taken
(or dropped on purpose by drop_if), 400 with its reason for one the relay rejected, so clients
report that document and do not retry it. A whole-request error is Elasticsearch's error shape.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from relay.errors import IngestError
from relay.server.keys import STARTED
from relay.server.protocols import Protocol

if TYPE_CHECKING:
    from relay.stages.pipeline import Prepared

VERSION = "9.1.0"
HEADERS = {"X-Elastic-Product": "Elasticsearch"}
_BULK = re.compile(r"^(?:/[^/_][^/]*)?/_bulk/?$")  # /_bulk, /<index>/_bulk (index names cannot start with _)
# Set-up calls clients make before sending: acknowledged, and answered "it exists".
_SETUP = re.compile(r"^/(?:_index_template|_template|_component_template|_ilm|_data_stream|_ingest|_alias|_aliases"
                    r"|_enrich|_security/_authenticate|_cat)(?:/|$)")
# GET/HEAD /<index> (does it exist?) and PUT /<index> (create it): never a POST, which could be data
_INDEX = re.compile(r"^/[^/_][^/]*(?:/_alias|/_mapping|/_settings)?/?$")
_INFO = {"/": "info", "/_license": "license", "/_xpack": "xpack", "/_cluster/health": "health",
         "/_nodes": "nodes", "/_nodes/http": "nodes", "/_nodes/_local": "nodes"}
_json = msgspec.json.Encoder()
_UUID = "cmVsYXktcmVsYXktcmVs"
_CREATED = b',"status":201,"result":"created","_version":1}}'


def _answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json",
                        headers={**HEADERS, **(headers or {})})


_ERROR_TYPES = {400: "illegal_argument_exception", 401: "security_exception", 404: "index_not_found_exception",
                408: "timeout_exception", 413: "content_too_long_exception", 415: "media_type_header_exception",
                429: "es_rejected_execution_exception", 503: "unavailable_shards_exception"}


def _error(status: int, reason: str) -> dict[str, Any]:
    cause = {"type": _ERROR_TYPES.get(status, "exception"), "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _version() -> dict[str, Any]:
    return {"number": VERSION, "build_flavor": "default", "build_type": "docker",
            "build_hash": "relay", "build_date": "2025-07-01T00:00:00.000Z", "build_snapshot": False,
            "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0"}


def _info(kind: str) -> dict[str, Any]:
    if kind == "info":
        return {"name": "relay", "cluster_name": "relay", "cluster_uuid": _UUID, "version": _version(),
                "tagline": "You Know, for Search"}
    license_ = {"status": "active", "uid": _UUID, "type": "basic", "mode": "basic",
                "issue_date_in_millis": 0, "issued_to": "relay", "issuer": "relay", "start_date_in_millis": -1}
    if kind == "license":
        return {"license": license_}
    if kind == "xpack":
        return {"build": {"hash": "relay", "date": "2025-07-01T00:00:00.000Z"}, "license": license_,
                "features": {"ilm": {"available": True, "enabled": True},
                             "security": {"available": True, "enabled": True}}}
    if kind == "health":
        return {"cluster_name": "relay", "status": "green", "timed_out": False, "number_of_nodes": 1,
                "number_of_data_nodes": 1, "active_primary_shards": 0, "active_shards": 0,
                "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 0}
    return {"_nodes": {"total": 1, "successful": 1, "failed": 0}, "cluster_name": "relay",
            "nodes": {"relay": {"name": "relay", "version": VERSION, "roles": ["data", "ingest", "master"],
                                "http": {"publish_address": "127.0.0.1:9200"}}}}


class Elasticsearch(Protocol):
    name = "elasticsearch"
    at_root = True

    def match(self, method: str, subpath: str) -> str | None:
        if _BULK.match(subpath):
            return "ingest" if method in ("POST", "PUT") else None
        if subpath in _INFO and method in ("GET", "HEAD"):
            return _INFO[subpath]
        if _SETUP.match(subpath) or (method in ("GET", "HEAD", "PUT") and _INDEX.match(subpath)):
            return "setup"
        return None

    async def handshake(self, kind: str, request: web.Request) -> web.Response:
        if kind == "setup":
            if request.method in ("GET", "HEAD"):
                return _answer(200, {})  # "it exists": clients then skip creating it
            return _answer(200, {"acknowledged": True})
        return _answer(200, _info(kind))

    def accepted(self, prepared: Prepared, request: web.Request) -> web.Response:
        started = request.get(STARTED, time.monotonic())
        items = prepared.meta or []
        rejected = {r.index: r for r in prepared.rejections}
        batch = os.urandom(6).hex()
        heads: dict[Any, bytes] = {}  # per distinct action: its item's bytes up to the _id
        parts = []
        # Written as bytes from per-action templates: a 1,000-item answer costs about what the
        # request's decoding does, not three dicts and an encode per item.
        for number, item in enumerate(items):
            problem = rejected.get(number) if rejected else None
            if problem is None:
                head = heads.get(item)
                if head is None:
                    head = heads[item] = b'{"%s":{"_index":%s,"_id":' % (item.op.encode(),
                                                                        _json.encode(item.index or "relay"))
                ident = _json.encode(item.id) if item.id is not None else b'"%s-%d"' % (batch.encode(), number)
                parts.append(head + ident + _CREATED)
            else:
                kind = "illegal_argument_exception" if problem.reason == "unsupported_action" \
                    else "document_parsing_exception"
                parts.append(_json.encode({item.op: {
                    "_index": item.index or "relay", "_id": item.id or f"{batch}-{number}", "status": 400,
                    "error": {"type": kind, "reason": problem.render()}}}))
        took = int((time.monotonic() - started) * 1000)
        body = b'{"took":%d,"errors":%s,"items":[%s]}' % (took, b"true" if rejected else b"false", b",".join(parts))
        return web.Response(status=200, body=body, content_type="application/json", headers=HEADERS)

    def failed(self, exc: IngestError, request: web.Request) -> web.Response:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="security" charset="UTF-8"'
        return _answer(exc.status, _error(exc.status, exc.message), headers)


PROTOCOL = Elasticsearch()
