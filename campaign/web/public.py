"""Public pages: the petition, signing, "check your email", and confirming."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale, gettext
from itsdangerous.encoding import base64_decode, bytes_to_int
from sqlalchemy import inspect, select
from sqlalchemy.exc import SQLAlchemyError

from campaign.extensions import db
from campaign.metrics import count_signature_confirmed, count_signature_created
from campaign.models import Petition, SignatureStatus
from campaign.models.base import utcnow
from campaign.models.petitions import SIGNABLE, VISIBLE
from campaign.services import killswitch
from campaign.services.abuse import SigningSignals, integrity_note, public_state
from campaign.services.counting import signature_count, signature_counts
from campaign.services.countries import flag, localized_country_name
from campaign.services.deliveries import public_mailings
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.letters import letter_recipients
from campaign.services.petitions import petition_by_slug, petition_targets
from campaign.services.responses import scoreboard
from campaign.services.signing import (
    SignerInput,
    SignOutcome,
    TokenError,
    confirm_signature,
    sign_petition,
    signature_for_token,
)
from campaign.services.supporters import (
    clean_referral_code,
    displayed_goal,
    recent_signers,
    title_in,
    translation_for,
)
from campaign.web import fastpath
from campaign.web.forms import (
    STARTED_FIELD,
    SignForm,
    check_form_token,
    form_token_window,
    make_form_token,
    make_started_token,
    started_at,
)
from campaign.web.i18n import languages, set_page_language, supported
from campaign.web.ratelimit import signing_over_limit
from campaign.web.security import same_origin_post

bp = Blueprint("public", __name__)


@bp.app_template_global()
def country_label(code: str) -> str:
    # In the page's language on supporter pages (issue 5); English elsewhere.
    return localized_country_name(code, str(get_locale() or "en").split("_")[0])


@bp.app_template_global()
def country_flag(code: str) -> str:
    return flag(code)


@bp.app_template_global()
def shown_goal(goal: int, count: int) -> int:
    return displayed_goal(goal, count)


# --- languages and the supporter's page context (issue 5) ---------------------------------------

def _petition_path(petition: Petition, lang: str) -> str:
    if lang == petition.language:
        return url_for("public.petition", slug=petition.slug)
    return url_for("public.petition_in", lang=lang, slug=petition.slug)


def _supporter_context(petition: Petition, lang: str) -> dict[str, Any]:
    """The text in the page's language (a translation, else the petition's own), the switcher's
    links, and the recent signers."""
    translation = translation_for(db.session, petition.id, lang) if lang != petition.language else None
    codes = [petition.language, *[c for c in languages() if c != petition.language]]
    return {"text": translation or petition,
            "language_links": [(code, _petition_path(petition, code)) for code in codes],
            "canonical_path": _petition_path(petition, lang),
            "recent": recent_signers(db.session, petition)}


def _page_language(petition: Petition) -> str:
    """A petition page speaks the language in its URL, else the petition's own."""
    return set_page_language(g.get("url_lang") or petition.language)


def _visible_petition(slug: str) -> Petition:
    petition = petition_by_slug(db.session, slug)
    if petition is None or petition.status not in VISIBLE:
        abort(404)
    return petition


def _preselected_country() -> str:
    return fastpath.preselected_country(request.accept_languages)


def _render_petition(petition: Petition, form: SignForm, status: int = 200,
                     form_error: str | None = None) -> Response:
    form.form_token.data = make_form_token(petition.id)
    count = signature_count(db.session, petition.id)
    lang = g.get("page_lang") or _page_language(petition)
    html = render_template(
        "public/petition.html", petition=petition, form=form, count=count,
        targets=petition_targets(db.session, petition.id), form_error=form_error,
        **_abuse_context(petition), **_mailing_context(petition), **_supporter_context(petition, lang))
    return make_response(html, status)


def _mailing_context(petition: Petition) -> dict[str, Any]:
    """Issue 4: "Delivered to N leaders on <date>", letters per target, the responses scoreboard.
    Not in the page's ETag (that would cost queries on every view): like the targets, a change
    shows once the token window turns or the count changes."""
    return {"mailings": public_mailings(db.session, petition),
            "scoreboard": scoreboard(db.session, petition.id)}


# --- abuse resistance (issue 6): kill switches, the integrity note, the honeypot -----------------

HONEYPOT_FIELD = "website"  # hidden by CSS (static/css/security.css); people leave it empty


def _abuse_context(petition: Petition) -> dict[str, Any]:
    switches = killswitch.switches(db.session)
    return {"pause_message": switches.signing_pause_message(petition.id),
            "integrity": integrity_note(db.session, petition.id)}


def _abuse_etag(etag: str, petition: Petition) -> str:
    """The page's ETag, also naming what the kill switches and the integrity note put in it."""
    switches = killswitch.switches(db.session)
    material = repr((etag, switches.fingerprint(), integrity_note(db.session, petition.id).as_tuple()))
    return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@bp.app_context_processor
def _site_banner() -> dict[str, Any]:
    # A lazy value: pages that never show the banner never read the switches.
    return {"site_banner": _banner}


def _banner() -> str:
    try:
        return killswitch.switches(db.session).banner
    except SQLAlchemyError:  # an error page about a database outage must still render
        db.session.rollback()
        return ""


def _form_issued_at(token: str) -> int | None:
    """The issue time a valid form token carries (Unix seconds): payload.timestamp.signature."""
    try:
        stamp = token.rsplit(".", 2)[1]
        return bytes_to_int(base64_decode(stamp))
    except (IndexError, ValueError, TypeError):
        return None


def _signals(token: str) -> SigningSignals:
    """What the hold decision needs from this request. The fill time counts from the later of
    the form token's window start and the page's own opening time (form_started, see
    form_started below), so a cached page's shared token no longer hides a fast bot."""

    slug = str((request.view_args or {}).get("slug", ""))
    issued = [moment for moment in (_form_issued_at(token),
                                    started_at(request.form.get(STARTED_FIELD, ""), slug))
              if moment is not None]
    return SigningSignals(
        ip=request.remote_addr,
        honeypot_filled=bool((request.form.get(HONEYPOT_FIELD) or "").strip()),
        fill_seconds=time.time() - max(issued) if issued else None,
        over_rate_limit=signing_over_limit(slug))


def _paused_page(petition: Petition) -> Response:
    form = SignForm(formdata=None)
    response = _render_petition(petition, form, 503)
    response.headers["Retry-After"] = "300"
    return response


@bp.get("/petitions/<slug>/form-started")
def form_started(slug: str) -> Response:
    """A signed "this page was opened now" for the sign form, fetched by static/js/site.js when
    the page loads: the cached page's own token only says in which FORM_TOKEN_BUCKET window it
    was rendered. Never cached; no database query, no cookie."""

    response = make_response(make_started_token(slug[:200]))
    response.mimetype = "text/plain"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def index() -> str:
    petitions = list(db.session.scalars(
        select(Petition).where(Petition.status.in_(list(VISIBLE))).order_by(Petition.published_at.desc())))
    counts = signature_counts(db.session, [p.id for p in petitions])
    return render_template("public/index.html", petitions=petitions, counts=counts)


class _PageCache:
    """Rendered petition pages of this process, keyed by their ETag; least recently used go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        # (page:slug, country, source[, lang, ref]) -> (monotonic expiry, etag, page): the microcache.
        self.recent: OrderedDict[tuple[str, ...], tuple[float, str, bytes]] = OrderedDict()

    def recent_page(self, key: tuple[str, ...]) -> tuple[str, bytes] | None:
        with self.lock:
            entry = self.recent.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[2]

    def remember(self, key: tuple[str, ...], seconds: float, etag: str, page: bytes) -> None:
        if seconds <= 0 or self.size <= 0:
            return
        with self.lock:
            self.recent[key] = (time.monotonic() + seconds, etag, page)
            self.recent.move_to_end(key)
            while len(self.recent) > self.size:
                self.recent.popitem(last=False)

    def get(self, key: str) -> bytes | None:
        with self.lock:
            page = self.pages.get(key)
            if page is not None:
                self.pages.move_to_end(key)
            return page

    def put(self, key: str, page: bytes) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.pages[key] = page
            while len(self.pages) > self.size:
                self.pages.popitem(last=False)


def _page_cache() -> _PageCache:
    cache = current_app.extensions.get("campaign.page_cache")
    if cache is None:
        cache = _PageCache(int(current_app.config["PAGE_CACHE_SIZE"]))
        current_app.extensions["campaign.page_cache"] = cache
    return cache


def _state(row: Any) -> list[Any]:
    # Every column, so a new column or an edit to the text changes the key without a list to keep.
    return [getattr(row, attr.key) for attr in inspect(row).mapper.column_attrs]


def _page_etag(petition: Petition, count: int, window: int, country: str, source: str,
               extra: tuple[str, ...] = ()) -> str:
    """What the anonymous page's body depends on, hashed: the petition and its campaign, the
    count, the form token's window, the preselected country and the source code.

    Targets are not in it (reading them would cost a query per view): an edit to them shows
    once the token window turns, within FORM_TOKEN_BUCKET seconds.
    """
    material = repr((_state(petition), _state(petition.campaign), count, window, country, source, extra))
    return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _cacheable(response: Response, etag: str) -> Response:
    config = current_app.config
    response.set_etag(etag)
    response.headers["Cache-Control"] = (
        f"public, max-age={int(config['PAGE_MAX_AGE'])}, "
        f"stale-while-revalidate={int(config['PAGE_STALE_WHILE_REVALIDATE'])}")
    # The country preselected from Accept-Language is in the body.
    response.vary.add("Accept-Language")
    return response


@bp.get("/<lang>/petitions/<slug>")
def petition_in(lang: str, slug: str) -> Response:
    """The petition in another language (issue 5): its translation if there is one, else its own
    text, with the interface in that language. An unknown language falls back to the petition's
    own page."""
    code = supported(lang)
    if code is None or code != lang:
        query = request.query_string.decode("latin-1")
        target = url_for("public.petition", slug=slug) + (f"?{query}" if query else "")
        return redirect(target, 302)  # type: ignore[return-value]
    g.url_lang = code
    return petition(slug)


@bp.get("/petitions/<slug>")
def petition(slug: str) -> Response:
    """The petition page: the same bytes for every anonymous visitor within a token window.

    No session, no cookie: the body depends only on what _page_etag hashes, so a proxy may cache
    it (Cache-Control: public) and a browser revalidates with If-None-Match for a 304. Within this
    process, a rendered page is kept under its ETag, so a busy petition is rendered once per
    count change and token window rather than once per view.
    """
    country = _preselected_country()
    source = (request.args.get("source") or "")[:64]
    # Issue 5: the URL's language and the referral code of a share link are inputs of the body.
    url_lang = g.get("url_lang") or ""
    ref = clean_referral_code(request.args.get("ref"))
    cache = _page_cache()
    # Microcache: for PAGE_MICROCACHE seconds, the page served last is served again without
    # reading the database; the count is then that many seconds old at most (the design allows 5).
    key = (f"page:{slug}", country, source, url_lang, ref)
    recent = cache.recent_page(key)
    if recent is not None:
        etag, body = recent
        if request.if_none_match.contains_weak(etag):
            return _cacheable(make_response("", 304), etag)
        return _cacheable(make_response(body), etag)
    petition = _visible_petition(slug)
    count = signature_count(db.session, petition.id)
    window = form_token_window()
    lang = _page_language(petition)
    etag = _page_etag(petition, count, window, country, source, (lang, ref))
    etag = _abuse_etag(etag, petition)
    if request.if_none_match.contains_weak(etag):
        return _cacheable(make_response("", 304), etag)
    page = cache.get(etag)
    if page is None:
        form = SignForm(formdata=None)
        form.country.data = country
        form.source.data = source
        form.ref.data = ref
        # Unticked on sensitive petitions: a name reaches officials only by the signer's own tick.
        form.consent_name_to_targets.data = not petition.is_sensitive
        form.form_token.data = make_form_token(petition.id, window)
        page = render_template(
            "public/petition.html", petition=petition, form=form, count=count,
            targets=petition_targets(db.session, petition.id), form_error=None,
            **_abuse_context(petition), **_mailing_context(petition),
            **_supporter_context(petition, lang)).encode("utf-8")
        cache.put(etag, page)
    seconds = float(current_app.config["PAGE_MICROCACHE"])
    cache.remember(key, seconds, etag, page)
    # Read from the database just now: the fast path may answer the same request for as long.
    fastpath.allow(request.environ, seconds, request.endpoint or "")
    return _cacheable(make_response(page), etag)


@dataclass(frozen=True)
class _SigningPetition:
    """What the sign POST needs of a visible petition, kept per process for PAGE_MICROCACHE
    seconds (as old as the page the form came from may be): a busy petition's POSTs skip a query."""

    id: int
    slug: str
    language: str
    status: str
    closes_at: datetime | None
    expires: float

    @property
    def is_signable(self) -> bool:
        # As Petition.is_signable, with the closing date checked at every request.
        return self.status in SIGNABLE and not (self.closes_at is not None and self.closes_at <= utcnow())


def _signing_petition(slug: str) -> _SigningPetition:
    cache: dict[str, _SigningPetition] = current_app.extensions.setdefault("campaign.signing_petitions", {})
    found = cache.get(slug)
    if found is not None and found.expires > time.monotonic():
        return found
    petition = _visible_petition(slug)
    expires = time.monotonic() + float(current_app.config["PAGE_MICROCACHE"])
    found = _SigningPetition(petition.id, petition.slug, petition.language, petition.status,
                             petition.closes_at, expires)
    if len(cache) > 1000:  # only visible petitions get here; a bound all the same
        cache.clear()
    cache[slug] = found
    return found


@bp.post("/petitions/<slug>/sign")
def sign(slug: str) -> Any:
    # The snapshot spares the hot path a query; every answer other than the 303 loads the
    # petition itself (they render it).
    snapshot = _signing_petition(slug)
    if not snapshot.is_signable:
        petition = _visible_petition(slug)
        return render_template("public/closed.html", petition=petition,
                               count=signature_count(db.session, petition.id)), 410
    if not same_origin_post():
        abort(400, description="This form can only be sent from this site's own page.")
    # The language of the page the form was on: the interface of any re-rendered form, the
    # signature's emails and the check-email page (issue 5).
    lang = set_page_language(supported(request.form.get("lang")) or snapshot.language)
    if lang != snapshot.language:
        g.url_lang = lang
    pause = killswitch.switches(db.session).signing_pause_message(snapshot.id)
    if pause is not None:
        return _paused_page(_visible_petition(slug))
    form = SignForm()
    form_problem = check_form_token(request.form.get("form_token", ""), snapshot.id)
    if form_problem == "invalid":
        abort(400, description="The form was incomplete or altered. Reload the page and sign again.")
    if not form.validate():
        return _render_petition(_visible_petition(slug), form, 400)
    try:
        email = parse_email(form.email.data or "",
                            check_deliverability=current_app.config["EMAIL_CHECK_DELIVERABILITY"])
    except InvalidEmail as error:
        form.email.errors = [str(error)]
        return _render_petition(_visible_petition(slug), form, 400)
    if form_problem == "expired":
        # Keep what they typed; a fresh token comes with the re-rendered form.
        return _render_petition(_visible_petition(slug), form, 400, form_error=gettext(
            "This page was open for a long time. Please check and send again."))
    signer = SignerInput(
        name=form.name.data or "", email=email, country=form.country.data or "",
        postcode=form.postcode.data or "", comment=form.comment.data or "",
        consent_updates=bool(form.consent_updates.data), source=form.source.data or "",
        consent_name_to_targets=bool(form.consent_name_to_targets.data),
        consent_reply_to=bool(form.consent_reply_to.data),
        consent_public_name=bool(form.consent_public_name.data),
        locale=lang, referred_by=form.ref.data or "")
    outcome = sign_petition(db.session, snapshot, signer, ip=request.remote_addr,
                            signals=_signals(request.form.get("form_token", "")))
    location = url_for("public.check_email", slug=snapshot.slug,
                       lang=lang if lang != snapshot.language else None)
    db.session.commit()
    if outcome == SignOutcome.NEW:
        count_signature_created()
    # The same answer whatever happened: the page never tells whether an address had signed.
    return redirect(location, 303)


@bp.get("/petitions/<slug>/check-email")
def check_email(slug: str) -> Any:
    # Every signer lands here after the POST, and the page is the same for all of them: the
    # microcache spares the hot path a petition query and a render per signature.
    cache = _page_cache()
    asked = supported(request.args.get("lang")) or ""
    key = (f"check-email:{slug}", "", asked)
    recent = cache.recent_page(key)
    if recent is not None:
        return recent[1]
    petition = _visible_petition(slug)
    lang = set_page_language(asked or petition.language)
    page = render_template("public/check_email.html", petition=petition,
                           petition_path=_petition_path(petition, lang),
                           petition_title=title_in(db.session, petition, lang),
                           dev_mailbox=current_app.config["DEV_MAILBOX"]).encode("utf-8")
    seconds = float(current_app.config["PAGE_MICROCACHE"])
    cache.remember(key, seconds, "", page)
    fastpath.allow(request.environ, seconds, request.endpoint or "")
    return page


def _signature_or_error(token: str) -> Any:
    try:
        return signature_for_token(db.session, token)
    except TokenError as error:
        status = 410 if error.reason == "expired" else 404
        abort(make_response(render_template("public/bad_link.html", reason=error.reason), status))


def _private(response: Any) -> Any:
    # The URL carries a token: keep it out of caches and other sites' Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/confirm/<token>")
def confirm(token: str) -> Response:
    signature = _signature_or_error(token)
    petition = db.session.get(Petition, signature.petition_id)
    if petition is None:
        abort(404)
    # In the language it was signed in; the thank-you page's share links carry its referral code.
    lang = set_page_language(supported(request.args.get("lang")) or signature.locale)
    html = render_template(
        "public/confirm.html", petition=petition, token=token,
        state=public_state(signature), just_confirmed=request.args.get("done") == "1",
        count=signature_count(db.session, petition.id),
        targets=petition_targets(db.session, petition.id),
        letter_targets=letter_recipients(db.session, signature),
        referral_code=signature.referral_code, petition_path=_petition_path(petition, lang),
        petition_title=title_in(db.session, petition, lang))
    return _private(make_response(html))


@bp.post("/confirm/<token>")
def confirm_post(token: str) -> Response:
    signature = _signature_or_error(token)
    # A held signature is confirmed the same way (it records confirmed_at, stays uncounted).
    if public_state(signature) == SignatureStatus.PENDING:
        confirmed = confirm_signature(db.session, signature)
        db.session.commit()
        if confirmed:
            count_signature_confirmed()
    return _private(redirect(url_for("public.confirm", token=token, done=1), 303))


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
