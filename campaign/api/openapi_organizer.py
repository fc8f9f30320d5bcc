"""The organizer part of the OpenAPI document: the bearer security scheme, the schemas of a
campaign's petitions, signatures, deliveries and mailings, and the /campaign/... operations.
campaign.api.openapi merges it into the one document."""

from __future__ import annotations

from typing import Any

from campaign.api.resources import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from campaign.models import MailingPolicy, PetitionStatus, SignatureStatus

SECURITY_SCHEME = {
    "bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "A per-campaign API token (`cmp_...`), created by an owner of the campaign in the "
                       "organizer pages (API and webhooks) and shown once. Scopes: `read` (petitions, "
                       "signatures with signers' names and consenting signers' emails, deliveries, "
                       "mailings) and `write` (create, edit and delete draft petitions). A token sees its "
                       "own campaign only. Cookies are never read.",
    },
}

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}
_DATE_TIME = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, Any], description: str = "",
         closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _links(*names: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "required": list(names),
            "properties": {n: _ref("Link") for n in (*names, *optional)}}


def _collection(name: str, item: str, relation: str) -> dict[str, Any]:
    return _obj(["per_page", "next_cursor", "_links", "_embedded"], {
        "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        "next_cursor": {**_NULLABLE_STRING,
                        "description": "Pass as `cursor` for the next page; null on the last."},
        "_links": {"type": "object", "required": ["self"], "properties": {
            "self": _ref("Link"), "next": _ref("Link"), "osdi:petition": _ref("Link"),
            "osdi:petitions": {"type": "array", "items": _ref("Link")}}},
        "_embedded": _obj([relation], {relation: {"type": "array", "items": _ref(item)}}),
    }, f"A page of {name}, newest first.")


def schemas() -> dict[str, Any]:
    string = {"type": "string"}
    count = {"type": "integer", "minimum": 0}
    target_ref = _obj(["id", "name", "title", "country"], {
        "id": {"type": "integer"}, "name": string, "title": string, "country": string},
        "A target, without its email address.")
    return {
        "Campaign": _obj(["identifiers", "origin_system", "name", "slug", "organization", "token_scopes",
                          "_links"], {
            "identifiers": {"type": "array", "items": string},
            "origin_system": {"type": "string", "const": "campaign"},
            "name": string, "slug": string, "organization": string,
            "token_scopes": {"type": "array", "items": {"type": "string", "enum": ["read", "write"]},
                             "description": "What the token that asked may do."},
            "_links": _links("self", "osdi:petitions"),
        }, "The campaign the token belongs to."),
        "ManagedPetition": _obj([
            "identifiers", "origin_system", "id", "created_date", "modified_date", "title", "slug", "summary",
            "description", "body_markdown", "petition_text", "status", "language", "goal", "closes_on",
            "mailing_policy", "is_sensitive", "accepting_signatures", "signature_count", "total_signatures",
            "browser_url", "_links"], {
            "identifiers": {"type": "array", "items": string},
            "origin_system": {"type": "string", "const": "campaign"},
            "id": {"type": "integer", "description": "The id in the organizer endpoints' paths."},
            "created_date": _DATE_TIME, "modified_date": _DATE_TIME,
            "title": string, "slug": string, "summary": string,
            "description": {"type": "string", "description": "The text as sanitized HTML."},
            "body_markdown": {"type": "string", "description": "The text as the organizers wrote it."},
            "petition_text": {"type": "string", "description": "The letter to the targets (OSDI's name)."},
            "status": {"type": "string", "enum": [s.value for s in PetitionStatus]},
            "language": string,
            "goal": {"type": "integer", "minimum": 0},
            "closes_on": {"type": ["string", "null"], "format": "date",
                          "description": "The last day (UTC) it takes signatures."},
            "mailing_policy": {"type": "string", "enum": [m.value for m in MailingPolicy]},
            "is_sensitive": {"type": "boolean", "description": "Signers could be in danger if named."},
            "accepting_signatures": {"type": "boolean"},
            "signature_count": count, "total_signatures": count,
            "browser_url": {"type": "string", "format": "uri"},
            "_links": _links("self", "osdi:signatures", "campaign:deliveries", "campaign:mailings",
                             optional=("campaign:public",)),
        }, "A petition of the campaign as its organizers see it (drafts too)."),
        "ManagedPetitionCollection": _collection("petitions", "ManagedPetition", "osdi:petitions"),
        "PetitionWrite": {
            "type": "object",
            "description": "The organizer form's fields and rules. On create `title` is required and the "
                           "rest default as in the form; on edit, members left out keep their value. "
                           "`null` clears `closes_on`, `summary`, `body_markdown`, `petition_text` and "
                           "`slug` (a new one is made from the title).",
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 300},
                "slug": {"type": ["string", "null"], "maxLength": 120,
                         "description": "Lower-case letters, digits and hyphens. Fixed once published."},
                "summary": {"type": ["string", "null"], "maxLength": 1000},
                "body_markdown": {"type": ["string", "null"], "maxLength": 50000,
                                  "description": "Markdown; raw HTML is shown as text."},
                "petition_text": {"type": ["string", "null"], "maxLength": 20000},
                "goal": {"type": "integer", "minimum": 1, "maximum": 100000000},
                "language": {"type": "string", "description": "ISO 639-1 code, e.g. `en`."},
                "closes_on": {"type": ["string", "null"], "format": "date"},
                "mailing_policy": {"type": "string", "enum": [m.value for m in MailingPolicy]},
                "is_sensitive": {"type": "boolean", "default": True},
            },
            "example": {"title": "Free the prisoners", "summary": "They were arrested for who they are.",
                        "body_markdown": "**Release them now.**", "goal": 10000, "language": "en"},
        },
        "Person": _obj(["name", "email_addresses", "postal_addresses"], {
            "name": {"type": "string", "description": "Full name; empty once erased."},
            "email_addresses": {"type": "array", "maxItems": 1, "items": _obj(["address", "primary"], {
                "address": {"type": "string"}, "primary": {"type": "boolean"}}),
                "description": "Only for signers who agreed to hear from the organizers."},
            "postal_addresses": {"type": "array", "items": _obj(["country"], {"country": string})},
        }, "OSDI's person, with what the signer gave that organizers may see."),
        "Signature": _obj([
            "identifiers", "origin_system", "id", "created_date", "modified_date", "status", "confirmed_date",
            "comments", "referrer_data", "country", "consent_updates", "consent_name_to_targets",
            "consent_public_name", "erased", "person", "_links"], {
            "identifiers": {"type": "array", "items": string},
            "origin_system": {"type": "string", "const": "campaign"},
            "id": {"type": "integer"},
            "created_date": _DATE_TIME, "modified_date": _DATE_TIME,
            "status": {"type": "string", "enum": [s.value for s in SignatureStatus]},
            "confirmed_date": _NULLABLE_DATE_TIME,
            "comments": string,
            "referrer_data": _obj(["source"], {"source": string}),
            "country": string,
            "consent_updates": {"type": "boolean"},
            "consent_name_to_targets": {"type": "boolean"},
            "consent_public_name": {"type": "boolean"},
            "erased": {"type": "boolean", "description": "The retention job erased name and email."},
            "person": _ref("Person"),
            "_links": _links("osdi:petition"),
        }, "An OSDI signature with its person embedded."),
        "SignatureCollection": _collection("signatures", "Signature", "osdi:signatures"),
        "Delivery": _obj(["id", "kind", "target", "new_signatures", "total_signatures", "status", "attempts",
                          "error", "created_date", "sent_date"], {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["batch", "final", "now"]},
            "target": target_ref,
            "new_signatures": count, "total_signatures": count,
            "status": {"type": "string",
                       "enum": ["queued", "retrying", "sent", "bounced", "failed", "cancelled"]},
            "attempts": count, "error": string,
            "created_date": _DATE_TIME, "sent_date": _NULLABLE_DATE_TIME,
        }, "A batch delivered to a target: one email with the letter, the counts and the list."),
        "DeliveryCollection": _collection("deliveries", "Delivery", "campaign:deliveries"),
        "Mailings": _obj(["petition_id", "mailing_policy", "targets", "_links"], {
            "petition_id": {"type": "integer"},
            "mailing_policy": {"type": "string", "enum": [m.value for m in MailingPolicy]},
            "targets": {"type": "array", "items": _obj([
                "target", "cadence", "every_n", "next_run_date", "letters", "waiting", "reached",
                "address_ok", "failing", "last_error"], {
                "target": target_ref,
                "cadence": {"type": "string", "enum": ["every_n", "daily", "weekly", "final"]},
                "every_n": count,
                "next_run_date": _NULLABLE_DATE_TIME,
                "letters": {"type": "object", "additionalProperties": count,
                            "description": "Letters by status: queued, retrying, sent, failed, cancelled."},
                "waiting": {**count, "description": "Signatures waiting for the next delivery."},
                "reached": {**count, "description": "Signatures whose letter or delivery was sent."},
                "address_ok": {"type": "boolean"}, "failing": {"type": "boolean"}, "last_error": string,
            })},
            "_links": _links("self", "osdi:petition"),
        }, "Mail to officials: per target, its cadence, letters by status and what waits."),
    }


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        response["headers"] = headers
    return response


_CHALLENGE = {"WWW-Authenticate": {"description": "`Bearer realm=\"campaign\"`, with the error.",
                                   "required": True, "schema": {"type": "string"}}}


def _guarded(responses: dict[str, Any], scope: str, petition: bool) -> dict[str, Any]:
    unauthorized = _problem("No token, or an unknown, revoked or expired one (`unauthorized`).")
    unauthorized["headers"] = _CHALLENGE
    forbidden = _problem(f"The token lacks the `{scope}` scope (`insufficient-scope`).")
    forbidden["headers"] = _CHALLENGE
    too_many = _problem("Too many requests with this token; wait as long as `Retry-After` says.")
    too_many["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}
    out = {**responses, "401": unauthorized, "403": forbidden, "429": too_many}
    if petition:
        out["404"] = _problem("The campaign has no petition with this id (another campaign's is the "
                              "same: not found).")
    return dict(sorted(out.items()))


_PETITION_ID = {"name": "petition_id", "in": "path", "required": True,
                "description": "The petition's `id` (from the campaign's petition list).",
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**53}}


def _paging(kind: str) -> list[dict[str, Any]]:
    return [
        {"name": "limit", "in": "query", "required": False, "description": f"{kind} per page.",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}},
        {"name": "cursor", "in": "query", "required": False,
         "description": "The `next_cursor` of the previous page.",
         "schema": {"type": "string", "maxLength": 200}},
    ]


def _op(operation_id: str, summary: str, scope: str, responses: dict[str, Any], *, petition: bool,
        description: str = "", parameters: list[dict[str, Any]] | None = None,
        body: bool = False, sample: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id, "tags": ["Organizers"], "summary": summary,
        "description": (description + " " if description else "") + f"Scope: `{scope}`.",
        "security": [{"bearerAuth": []}], "x-scope": scope,
        "parameters": ([_PETITION_ID] if petition else []) + (parameters or []),
        "responses": _guarded(responses, scope, petition),
    }
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref("PetitionWrite")}}}
    if sample:
        op["x-codeSamples"] = [{"lang": "Shell", "label": "curl", "source": sample}]
    return op


def paths(base: str) -> dict[str, Any]:
    api = f"{base}/api/v1"
    auth = "-H 'Authorization: Bearer cmp_...'"
    bad_params = _problem("A query parameter is invalid (`invalid-parameters`).")
    invalid = {"400": _problem("The body is not a JSON object (`invalid-body`)."),
               "413": _problem("The body is larger than 1 MiB."),
               "415": _problem("The body is not `application/json` (`unsupported-media-type`)."),
               "422": _problem("Some fields are invalid (`validation-error`); `errors` says which.")}
    return {
        "/campaign": {"get": _op(
            "getCampaign", "The token's campaign", "read",
            {"200": _json("The campaign.", "Campaign")}, petition=False,
            sample=f"curl -s {auth} {api}/campaign")},
        "/campaign/petitions": {
            "get": _op("listCampaignPetitions", "The campaign's petitions, drafts too", "read",
                       {"200": _json("A page of petitions.", "ManagedPetitionCollection"), "400": bad_params},
                       petition=False, parameters=[*_paging("Petitions"), {
                           "name": "status", "in": "query", "required": False,
                           "schema": {"type": "string", "enum": [s.value for s in PetitionStatus]}}],
                       sample=f"curl -s {auth} '{api}/campaign/petitions?status=draft'"),
            "post": _op("createPetition", "Create a draft petition", "write",
                        {"201": _json("The new draft.", "ManagedPetition", {"Location": {
                            "description": "The new petition's URL.", "required": True,
                            "schema": {"type": "string", "format": "uri"}}}), **invalid},
                        petition=False, body=True,
                        description="The organizer form's rules; Markdown is sanitized. Publishing stays "
                                    "in the organizer pages (review, checks).",
                        sample=f"curl -s -X POST {auth} -H 'Content-Type: application/json' \\\n"
                               f"  -d '{{\"title\": \"Free the prisoners\", \"goal\": 10000}}' "
                               f"{api}/campaign/petitions"),
        },
        "/campaign/petitions/{petition_id}": {
            "get": _op("getCampaignPetition", "One of the campaign's petitions", "read",
                       {"200": _json("The petition.", "ManagedPetition")}, petition=True),
            "patch": _op("updatePetition", "Edit a petition", "write",
                         {"200": _json("The petition as saved.", "ManagedPetition"), **invalid},
                         petition=True, body=True,
                         description="Members left out keep their value. A published petition's `slug` "
                                     "cannot change."),
            "delete": _op("deletePetition", "Delete a draft", "write",
                          {"204": {"description": "Deleted."},
                           "409": _problem("Only drafts can be deleted with a token "
                                           "(`petition-not-draft`).")},
                          petition=True),
        },
        "/campaign/petitions/{petition_id}/signatures": {"get": _op(
            "listSignatures", "The petition's signatures", "read",
            {"200": _json("A page of signatures.", "SignatureCollection"), "400": bad_params},
            petition=True,
            description="Newest first, with the signer's name, and email address only when they agreed to "
                        "hear from the organizers.",
            parameters=[*_paging("Signatures"),
                        {"name": "status", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": [s.value for s in SignatureStatus]}},
                        {"name": "country", "in": "query", "required": False,
                         "description": "ISO 3166-1 alpha-2.",
                         "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$"}},
                        {"name": "consent_updates", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["true", "false"]}},
                        {"name": "created_after", "in": "query", "required": False,
                         "description": "A date (from its start, UTC) or a date-time with a zone.",
                         "schema": {"type": "string", "maxLength": 40}},
                        {"name": "created_before", "in": "query", "required": False,
                         "description": "A date (up to its end, UTC) or a date-time with a zone.",
                         "schema": {"type": "string", "maxLength": 40}}],
            sample=f"curl -s {auth} \\\n  '{api}/campaign/petitions/1/signatures?status=confirmed"
                   "&consent_updates=true'")},
        "/campaign/petitions/{petition_id}/deliveries": {"get": _op(
            "listDeliveries", "The petition's deliveries to targets", "read",
            {"200": _json("A page of deliveries.", "DeliveryCollection"), "400": bad_params},
            petition=True, parameters=_paging("Deliveries"))},
        "/campaign/petitions/{petition_id}/mailings": {"get": _op(
            "getMailings", "The state of the petition's mail to officials", "read",
            {"200": _json("Per target.", "Mailings")}, petition=True)},
    }
