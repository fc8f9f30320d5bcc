"""The OpenAPI 3.1 document of /api/v1, kept here as a Python structure and served as JSON at
/api/v1/openapi.json; /api/v1/docs renders it on the server. Schemathesis tests the app against it.

When an endpoint changes, this document changes in the same commit: tests/api checks that every
API route is described here and that every response conforms.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from campaign.api import openapi_organizer as organizer
from campaign.api.problems import PROBLEM_TYPES
from campaign.api.resources import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from campaign.services.countries import country_choices

API_VERSION = "1.0.0"
EXAMPLE_SLUG = "g20-chechnya"

_DESCRIPTION = """\
Public reads of published and closed petitions (their texts, counts and targets, never a target's
email address and never anything about a signer), and signing.

Signing through the API goes through the same checks as the sign form: the same field rules, one
signature per mailbox and petition, a confirmation email whose link must be followed before the
signature counts, and the same cap on emails per address. The answer is the same `202` whether or
not the address had signed before; it carries no signature id.

The API sets no cookies and reads none. Public reads may be fetched from any website
(`Access-Control-Allow-Origin: *`); signing takes `Content-Type: application/json` only and the
API never answers a CORS preflight, so no other website can make a visitor's browser sign.

Errors are RFC 9457 problem details (`application/problem+json`). Resource shapes follow the Open
Supporter Data Interface (OSDI) where it fits; docs/api.md lists the differences.

Organizer endpoints (`/campaign/...`) take a per-campaign API token as
`Authorization: Bearer <token>` (scopes `read` and `write`) and see that campaign only: another
campaign's petition is a `404`, like a missing one. No token, or a revoked or expired one, is a
`401`; a token without the scope a request needs is a `403`. Their answers are never cached.

Every endpoint is rate limited per client (per API token when one is sent) and answers `429`
with `Retry-After` over the limit. Webhooks (signature.confirmed, petition.milestone,
delivery.sent) are set up in the organizer pages; docs/api.md says how to verify their
signatures.
"""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _link() -> dict[str, Any]:
    return _ref("Link")


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _json_response(description: str, schema: str, cacheable: bool = True) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": _ref(schema)}}}
    if cacheable:
        response["headers"] = {
            "ETag": {"description": "Send it back in `If-None-Match` for a `304`.",
                     "schema": {"type": "string"}},
            "Cache-Control": {"description": "Public, for a few seconds.", "schema": {"type": "string"}},
            "Access-Control-Allow-Origin": {"description": "`*`: any website may read it.",
                                            "schema": {"type": "string", "enum": ["*"]}},
        }
    return response


_NOT_MODIFIED = {"description": "Not modified since the `ETag` sent in `If-None-Match`."}


def _too_many() -> dict[str, Any]:
    response = _problem_response("Too many requests from this client; wait as long as `Retry-After` says.")
    response["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}
    return response

_SLUG = {
    "name": "slug", "in": "path", "required": True,
    "description": "The petition's slug, as in its page's address `/petitions/<slug>`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 120},
    "example": EXAMPLE_SLUG,
}


def _schemas() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "Link": {"type": "object", "required": ["href"],
                 "properties": {"href": {"type": "string", "format": "uri"}}},
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string", "format": "uri-reference",
                         "description": "`about:blank`, or a link to this problem type in these docs."},
                "title": {"type": "string", "description": "A short summary of the problem type."},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "detail": {"type": "string", "description": "What went wrong with this request."},
                "errors": {"type": "object", "additionalProperties": string,
                           "description": "Field or parameter name -> a message to show next to it."},
            },
        },
        "Target": {
            "type": "object", "description": "A decision maker the petition is addressed to.",
            "required": ["name", "title", "country", "country_name"],
            "additionalProperties": False,
            "properties": {
                "name": string, "title": string,
                "country": {"type": "string",
                            "description": "ISO 3166-1 alpha-2, or a body's code such as `EU`."},
                "country_name": string,
            },
        },
        "OsdiTarget": {
            "type": "object", "description": "OSDI's target subobject.",
            "required": ["name", "title"], "additionalProperties": False,
            "properties": {"name": string, "title": string},
        },
        "Petition": {
            "type": "object",
            "required": ["identifiers", "origin_system", "created_date", "modified_date", "slug",
                         "title", "summary", "description", "status", "language", "goal",
                         "accepting_signatures", "signature_count", "total_signatures", "url",
                         "browser_url", "targets", "target", "_links"],
            "additionalProperties": False,
            "properties": {
                "identifiers": {"type": "array", "items": string,
                                "description": "OSDI identifiers, `campaign:<id>`."},
                "origin_system": {"type": "string", "const": "campaign"},
                "created_date": {"type": "string", "format": "date-time"},
                "modified_date": {"type": "string", "format": "date-time"},
                "slug": string,
                "title": string,
                "summary": {"type": "string", "description": "Plain text, one paragraph."},
                "description": {"type": "string",
                                "description": "The petition's text as sanitized HTML."},
                "status": {"type": "string", "enum": ["published", "closed"]},
                "language": {"type": "string", "description": "BCP 47 language tag of the text."},
                "goal": {"type": "integer", "minimum": 0},
                "accepting_signatures": {"type": "boolean",
                                         "description": "False once closed or past its closing date."},
                "signature_count": {"type": "integer", "minimum": 0,
                                    "description": "Confirmed signatures that count, plus paper ones."},
                "total_signatures": {"type": "integer", "minimum": 0,
                                     "description": "OSDI's name for `signature_count`."},
                "url": {"type": "string", "format": "uri", "description": "The petition's page."},
                "browser_url": {"type": "string", "format": "uri", "description": "OSDI's name for `url`."},
                "targets": {"type": "array", "items": _ref("Target")},
                "target": {"type": "array", "items": _ref("OsdiTarget")},
                "_links": {
                    "type": "object",
                    "required": ["self", "osdi:record_signature_helper", "campaign:count",
                                 "campaign:targets", "campaign:embed", "browser"],
                    "properties": {name: _link() for name in (
                        "self", "osdi:record_signature_helper", "campaign:count", "campaign:targets",
                        "campaign:embed", "browser")},
                },
            },
        },
        "PetitionCollection": {
            "type": "object", "required": ["per_page", "next_cursor", "_links", "_embedded"],
            "additionalProperties": False,
            "properties": {
                "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                "next_cursor": {"type": ["string", "null"],
                                "description": "Pass it as `cursor` for the next page; null on the last."},
                "_links": {
                    "type": "object", "required": ["self", "osdi:petitions"],
                    "properties": {"self": _link(), "next": _link(),
                                   "osdi:petitions": {"type": "array", "items": _link()}},
                },
                "_embedded": {
                    "type": "object", "required": ["osdi:petitions"],
                    "properties": {"osdi:petitions": {"type": "array", "items": _ref("Petition")}},
                },
            },
        },
        "Count": {
            "type": "object",
            "required": ["slug", "signature_count", "total_signatures", "goal", "accepting_signatures",
                         "_links"],
            "additionalProperties": False,
            "properties": {
                "slug": string,
                "signature_count": {"type": "integer", "minimum": 0},
                "total_signatures": {"type": "integer", "minimum": 0},
                "goal": {"type": "integer", "minimum": 0},
                "accepting_signatures": {"type": "boolean"},
                "_links": {"type": "object", "required": ["self", "osdi:petition"],
                           "properties": {"self": _link(), "osdi:petition": _link()}},
            },
        },
        "Targets": {
            "type": "object", "required": ["slug", "targets", "_links"], "additionalProperties": False,
            "properties": {
                "slug": string,
                "targets": {"type": "array", "items": _ref("Target")},
                "_links": {"type": "object", "required": ["self", "osdi:petition"],
                           "properties": {"self": _link(), "osdi:petition": _link()}},
            },
        },
        "SignatureRequest": {
            "type": "object",
            "description": "What the sign form asks for. Unknown members are ignored; `null` is the same "
                           "as leaving a member out.",
            "required": ["name", "email", "country"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200,
                         "description": "Full name. Printable text in any script; no control characters."},
                "email": {"type": "string", "format": "email", "maxLength": 254,
                          "description": "Where the confirmation link goes."},
                "country": {"type": "string", "enum": [code for code, _ in country_choices()],
                            "description": "ISO 3166-1 alpha-2 code of the signer's country."},
                "postcode": {"type": "string", "maxLength": 20},
                "comment": {"type": "string", "maxLength": 1000,
                            "description": "Sent with the signer's letter; line breaks allowed."},
                "consent_updates": {"type": "boolean", "default": False,
                                    "description": "May the organizers email about this campaign?"},
                "source": {"type": "string", "maxLength": 64,
                           "description": "A source or referral code, e.g. the partner's name. Control "
                                          "characters are removed and it is cut at 64 characters."},
            },
            "example": {"name": "Ada Lovelace", "email": "ada@example.com", "country": "GB",
                        "postcode": "NW1", "comment": "", "consent_updates": False,
                        "source": "partner-newsletter"},
        },
        "SignatureAccepted": {
            "type": "object", "required": ["status", "detail", "_links"], "additionalProperties": False,
            "description": "The same for every accepted request: it does not say whether the address "
                           "had signed before, and carries no signature id.",
            "properties": {
                "status": {"type": "string", "const": "accepted"},
                "detail": string,
                "_links": {"type": "object", "required": ["osdi:petition"],
                           "properties": {"osdi:petition": _link()}},
            },
        },
    }


def _curl(base: str, path: str, body: str | None = None) -> list[dict[str, str]]:
    if body is None:
        command = f"curl -s {base}/api/v1{path}"
    else:
        command = (f"curl -s -X POST {base}/api/v1{path} \\\n  -H 'Content-Type: application/json' \\\n"
                   f"  -d '{body}'")
    return [{"lang": "Shell", "label": "curl", "source": command}]


def _paths(base: str) -> dict[str, Any]:
    slug = EXAMPLE_SLUG
    not_found = _problem_response("No published or closed petition has this slug.")
    return {
        "/petitions": {"get": {
            "operationId": "listPetitions",
            "tags": ["Petitions"],
            "summary": "List published and closed petitions",
            "description": "Newest first. Follow `_links.next` (or pass `next_cursor` as `cursor`) "
                           "for the next page; the last page has no `next` link.",
            "parameters": [
                {"name": "limit", "in": "query", "required": False,
                 "description": f"Petitions per page, 1 to {MAX_PAGE_SIZE}.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                            "default": DEFAULT_PAGE_SIZE}},
                {"name": "cursor", "in": "query", "required": False,
                 "description": "The `next_cursor` of the previous page.",
                 "schema": {"type": "string", "maxLength": 200}},
                {"name": "status", "in": "query", "required": False,
                 "description": "Only petitions in this state; both when left out.",
                 "schema": {"type": "string", "enum": ["published", "closed"]}},
            ],
            "responses": {
                "200": _json_response("A page of petitions.", "PetitionCollection"),
                "304": _NOT_MODIFIED,
                "400": _problem_response("A query parameter is invalid (`invalid-parameters`)."),
                "429": _too_many(),
            },
            "x-codeSamples": _curl(base, "/petitions?limit=10"),
        }},
        "/petitions/{slug}": {"get": {
            "operationId": "getPetition",
            "tags": ["Petitions"],
            "summary": "One petition",
            "parameters": [_SLUG],
            "responses": {"200": _json_response("The petition.", "Petition"), "304": _NOT_MODIFIED,
                          "404": not_found, "429": _too_many()},
            "x-codeSamples": _curl(base, f"/petitions/{slug}"),
        }},
        "/petitions/{slug}/count": {"get": {
            "operationId": "getPetitionCount",
            "tags": ["Petitions"],
            "summary": "A petition's signature count",
            "description": "Cheap and cacheable (a few seconds): what a widget or a partner's page "
                           "polls. The count is at most a few seconds old.",
            "parameters": [_SLUG],
            "responses": {"200": _json_response("The count.", "Count"), "304": _NOT_MODIFIED,
                          "404": not_found, "429": _too_many()},
            "x-codeSamples": _curl(base, f"/petitions/{slug}/count"),
        }},
        "/petitions/{slug}/targets": {"get": {
            "operationId": "getPetitionTargets",
            "tags": ["Petitions"],
            "summary": "Who a petition is addressed to",
            "description": "Names, titles and countries. Targets' email addresses are never published.",
            "parameters": [_SLUG],
            "responses": {"200": _json_response("The targets, in the petition's order.", "Targets"),
                          "304": _NOT_MODIFIED, "404": not_found,
                          "429": _too_many()},
            "x-codeSamples": _curl(base, f"/petitions/{slug}/targets"),
        }},
        "/petitions/{slug}/signatures": {"post": {
            "operationId": "signPetition",
            "tags": ["Signing"],
            "summary": "Sign a petition (OSDI's record signature helper, without a person resource)",
            "description": "Records a pending signature and emails its confirmation link, exactly as "
                           "the sign form does. The answer is the same `202` whether the address is "
                           "new, has a pending signature (the link is sent again), has already "
                           "confirmed (it gets a note saying so) or has had its share of emails; no "
                           "signature id is returned. Rate limits answer `429`.",
            "parameters": [_SLUG],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("SignatureRequest")}}},
            "responses": {
                "202": {"description": "Accepted. The signature counts once its owner confirms it.",
                        "content": {"application/json": {"schema": _ref("SignatureAccepted")}}},
                "400": _problem_response("The body is not a JSON object (`invalid-body`)."),
                "404": not_found,
                "410": _problem_response("The petition no longer takes signatures (`petition-closed`)."),
                "413": _problem_response("The body is larger than 1 MiB."),
                "415": _problem_response("The body is not `application/json` (`unsupported-media-type`)."),
                "422": _problem_response("Some fields are invalid (`validation-error`); `errors` "
                                         "says which and why."),
                "429": _too_many(),
                "503": _problem_response("Signing is paused (`signing-paused`)."),
            },
            "x-codeSamples": _curl(base, f"/petitions/{slug}/signatures",
                                   '{"name": "Ada Lovelace", "email": "ada@example.com", '
                                   '"country": "GB", "consent_updates": false, "source": "my-site"}'),
        }},
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    """The document for an installation whose public origin is base_url."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Campaign API",
            "version": API_VERSION,
            "summary": "Petitions, counts, targets and signing; a campaign's own data behind its tokens.",
            "description": _DESCRIPTION,
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": f"{base_url}/api/v1"}],
        "tags": [{"name": "Petitions", "description": "Public reads; no authentication."},
                 {"name": "Signing", "description": "The sign form's path, as JSON."},
                 {"name": "Organizers", "description": "A campaign's own data, behind its API tokens "
                                                       "(`Authorization: Bearer`)."}],
        "paths": {**_paths(base_url), **organizer.paths(base_url)},
        "components": {"schemas": {**_schemas(), **organizer.schemas()},
                       "securitySchemes": organizer.SECURITY_SCHEME},
        "x-problem-types": {
            name: {"status": p.status, "title": p.title, "description": p.description,
                   "type": f"{base_url}/api/v1/docs#problem-{name}"}
            for name, p in PROBLEM_TYPES.items()},
    }


# --- for the docs page ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemaRow:
    """One line of a schema table on the docs page: a field, its type and what it must be."""

    name: str
    type: str
    required: bool
    description: str
    rules: str
    depth: int


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    ref = schema.get("$ref")
    if not ref:
        return None, schema
    name = ref.rsplit("/", 1)[-1]
    return name, document["components"]["schemas"][name]


def _type_of(document: dict[str, Any], schema: dict[str, Any]) -> str:
    name, resolved = _resolve(document, schema)
    if name:
        return name
    kind = resolved.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(document, resolved.get('items', {}))}"
    if isinstance(kind, list):
        return " or ".join(kind)
    if "format" in resolved:
        return f"{kind} ({resolved['format']})"
    return str(kind)


def _rules(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
                       ("minimum", "at least {}"), ("maximum", "at most {}"), ("default", "default {}"),
                       ("const", "always {}")):
        if key in schema:
            value = schema[key]
            parts.append(label.format(str(value).lower() if isinstance(value, bool) else value))
    if "enum" in schema:
        values = schema["enum"]
        parts.append("one of " + ", ".join(map(str, values)) if len(values) <= 8
                     else f"one of {len(values)} codes")
    return "; ".join(parts)


def schema_rows(document: dict[str, Any], schema: dict[str, Any], depth: int = 0,
                prefix: str = "") -> list[SchemaRow]:
    """The fields of a schema, nested objects indented (one level of named schemas is expanded)."""
    _name, resolved = _resolve(document, schema)
    rows: list[SchemaRow] = []
    required = set(resolved.get("required", []))
    for field, sub in resolved.get("properties", {}).items():
        _sub_name, sub_resolved = _resolve(document, sub)
        rows.append(SchemaRow(prefix + field, _type_of(document, sub), field in required,
                              sub_resolved.get("description", ""), _rules(sub_resolved), depth))
        if sub_resolved.get("type") == "object" and "properties" in sub_resolved and not sub.get("$ref"):
            rows += schema_rows(document, sub_resolved, depth + 1, prefix + field + ".")
    return rows


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation with what the docs page shows of it, in the document's order."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            found.append({
                "method": method.upper(), "path": path, "id": operation["operationId"],
                "summary": operation["summary"], "description": operation.get("description", ""),
                "parameters": operation.get("parameters", []),
                "body": schema_rows(document, body["schema"]) if body else None,
                "body_type": _type_of(document, body["schema"]) if body else None,
                "example": deepcopy(_resolve(document, body["schema"])[1].get("example")) if body else None,
                "responses": [(code, response["description"],
                               _type_of(document, next(iter(response["content"].values()))["schema"])
                               if response.get("content") else "")
                              for code, response in operation["responses"].items()],
                "samples": operation.get("x-codeSamples", []),
                "scope": operation.get("x-scope"),
            })
    return found
