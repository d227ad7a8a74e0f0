"""The OpenAPI document of the coordinator's API, built from the route table itself so the two
cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from xwch import __version__ as version
from xwch.coordinator.web import Route

_REF = "#/components/schemas/"

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    messages: list[type] = []
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"\{(\w+)\}", route.pattern)
            ],
            "responses": {
                "200": {
                    "description": "success",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {
                    "description": "bad request",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "401": {"description": "missing or unknown token"},
                "403": {"description": "a token of another role"},
                "404": {"description": "not found"},
                "503": {"description": "busy: retry after the Retry-After header"},
            },
        }
        if route.roles:
            operation["security"] = [{"bearer": []}]
            operation["x-xwch-roles"] = list(route.roles)
        if isinstance(route.body, type):
            messages.append(route.body)
            schema: dict[str, Any] = {"$ref": f"{_REF}{route.body.__name__}"}
        elif route.body:
            schema = {"type": "object", "title": route.body}
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        paths.setdefault("/api/v1" + route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "XWCH coordinator",
            "version": version,
            "description": "Jobs, workers' signals (RR, WR, WA, WRS) and the warehouses' catalog.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            # Generated from the messages' own field types, as their decoders are.
            "schemas": msgspec.json.schema_components(messages, ref_template=_REF + "{name}")[1],
        },
        "paths": paths,
    }
