"""The API's problem types (RFC 9457): one catalogue for the responses, the OpenAPI document and
the docs page, whose anchors (/api/v1/docs#problem-<name>) the `type` URIs point at."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemType:
    name: str
    status: int
    title: str
    description: str


PROBLEM_TYPES: dict[str, ProblemType] = {p.name: p for p in (
    ProblemType("invalid-body", 400, "The request body is not a JSON object",
                "The body could not be read as UTF-8 JSON, or its top level is not an object. "
                "Nothing was recorded."),
    ProblemType("invalid-parameters", 400, "Some query parameters are invalid",
                "`errors` maps each bad query parameter to what is wrong with it."),
    ProblemType("unsupported-media-type", 415, "Send JSON",
                "Signing takes `Content-Type: application/json` only. A form on another website "
                "cannot send that type without the browser asking this API first (a CORS "
                "preflight), which the API never allows: that is what keeps signing through the "
                "API from being a cross-site request forgery hole."),
    ProblemType("validation-error", 422, "Some fields are invalid",
                "`errors` maps each field to a message fit to show next to it. The rules are the "
                "sign form's. Nothing was recorded."),
    ProblemType("petition-closed", 410, "This petition is closed",
                "The petition no longer takes signatures: it was closed, or its closing date has "
                "passed. It can still be read."),
    ProblemType("signing-paused", 503, "Signing is paused",
                "The platform's admins have paused signing, for this petition or everywhere; "
                "`detail` carries their message. Nothing was recorded. Try again later "
                "(`Retry-After`)."),
    ProblemType("unauthorized", 401, "An API token is needed",
                "The organizer endpoints need `Authorization: Bearer <token>` with a live token of "
                "the campaign: the header is missing, or the token is unknown, revoked or expired, or "
                "whoever created it is no longer an owner of the campaign. Cookies are never read."),
    ProblemType("insufficient-scope", 403, "The token lacks a scope",
                "The token is valid but lacks the scope (`read` or `write`) this request needs; "
                "`WWW-Authenticate` names it. Create a token with that scope."),
    ProblemType("petition-not-draft", 409, "Only drafts can be deleted",
                "A token deletes drafts only. A petition that was published had supporters: it is "
                "deleted by an owner in the organizer pages, after a screen that says what goes "
                "with it."),
)}
