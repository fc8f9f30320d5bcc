"""Account pages: sign in (with an optional second factor), sign out, sign up, verify an
address, forgotten password, account settings, and accepting an invitation."""

from __future__ import annotations

import base64
import time
from typing import Any, cast
from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    has_request_context,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.globals import request_ctx
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user

from campaign.extensions import db, login_manager
from campaign.models import Campaign, Invitation, User, UserStatus
from campaign.services import accounts
from campaign.services.accounts import AccountError, BadCredentials, NotActive, Throttled, TokenInvalid
from campaign.services.emails import InvalidEmail
from campaign.services.organizing import OrganizingError, accept_invitation, invitation_for_token
from campaign.web.auth_forms import (
    ButtonForm,
    ChangePasswordForm,
    CodeForm,
    DisableTotpForm,
    ForgotForm,
    InvitedLoginForm,
    InvitedSignupForm,
    LoginForm,
    NewPasswordForm,
    SignupForm,
)

bp = Blueprint("auth", __name__)

_PENDING_2FA = "_2fa_user"
_PENDING_2FA_AT = "_2fa_at"
_PENDING_NEXT = "_2fa_next"
_TOTP_SETUP = "_totp_setup"
_2FA_SECONDS = 300


def install(app: Flask) -> None:
    """Flask-Login on the app: sessions name "<user id>:<session token>"."""
    # No context processor: it would read the session on every page, and public petition
    # pages must not vary on cookies. Organizer templates get the user from our blueprints.
    login_manager.init_app(app, add_context_processor=False)
    login_manager.session_protection = "basic"
    _quiet_remember_cookie(app)

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        return accounts.load_session_user(db.session, session_id)

    @login_manager.unauthorized_handler
    def unauthorized() -> ResponseReturnValue:
        flash("Please sign in to continue.")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _quiet_remember_cookie(app: Flask) -> None:
    """Flask-Login looks into the session after every request (for a remember-me cookie, which
    this app never sets). In Flask 3.1 any look marks the session accessed, which adds
    "Vary: Cookie" to the cacheable public pages. Run it only when the request used the session
    anyway (signing in or out always does)."""
    original = login_manager._update_remember_cookie

    def remember_cookie_if_session_used(response: Response) -> Response:
        opened = getattr(request_ctx._get_current_object(), "_session", None)  # type: ignore[attr-defined]
        if opened is not None and opened.accessed:
            return cast(Response, original(response))
        return response

    functions = app.after_request_funcs.setdefault(None, [])
    functions[:] = [remember_cookie_if_session_used if f == original else f for f in functions]


def me() -> User:
    return cast(User, current_user._get_current_object())


@bp.app_context_processor
def _account_context() -> dict[str, Any]:
    # Only the organizer and account pages (their blueprints) ask for the user.
    if has_request_context() and request.blueprint in {"auth", "organize"}:
        return {"current_user": current_user}
    return {}


def safe_next(value: str | None) -> str | None:
    """A redirect target on this site only: a path, never a URL with a host or a scheme.

    Protocol-relative (//host), backslash tricks (/\\host), control characters and anything
    urlsplit sees a scheme or host in are refused.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _after_login() -> str:
    return safe_next(request.args.get("next")) or url_for("organize.index")


def _finish_login(user: User, target: str) -> ResponseReturnValue:
    # A fresh session: nothing from before signing in (a half-done second factor, an old CSRF
    # token) carries over.
    session.clear()
    login_user(user)
    session.permanent = True
    accounts.record_login(db.session, user)
    db.session.commit()
    return redirect(target)


def _error_page(template: str, status: int, retry_after: int | None = None,
                **context: Any) -> Response:
    response = make_response(render_template(template, **context), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.route("/account/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(_after_login())
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(db.session, form.email.data or "", form.password.data or "",
                                         request.remote_addr)
        except Throttled as error:
            db.session.commit()
            return _error_page("auth/login.html", 429, error.retry_after, form=form, error=str(error))
        except (BadCredentials, NotActive) as error:
            db.session.commit()  # the failure is counted even though the login is refused
            status = 401 if isinstance(error, BadCredentials) else 403
            return _error_page("auth/login.html", status, form=form, error=str(error))
        if user.has_totp:
            session[_PENDING_2FA] = user.get_id()
            session[_PENDING_2FA_AT] = int(time.time())
            session[_PENDING_NEXT] = _after_login()
            db.session.commit()
            return redirect(url_for("auth.login_code"))
        return _finish_login(user, _after_login())
    return render_template("auth/login.html", form=form, error=None)


def _pending_user() -> User | None:
    started = session.get(_PENDING_2FA_AT)
    if not isinstance(started, int) or time.time() - started > _2FA_SECONDS:
        return None
    return accounts.load_session_user(db.session, str(session.get(_PENDING_2FA, "")))


@bp.route("/account/login/code", methods=["GET", "POST"])
def login_code() -> ResponseReturnValue:
    user = _pending_user()
    if user is None:
        flash("Please sign in again.")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            accounts.check_second_factor(db.session, user, form.code.data or "", request.remote_addr)
        except Throttled as error:
            db.session.commit()
            return _error_page("auth/code.html", 429, error.retry_after, form=form, error=str(error))
        except BadCredentials:
            db.session.commit()
            return _error_page("auth/code.html", 401, form=form,
                               error="That code is not right, or it was used already. Wait for the next one.")
        target = safe_next(session.get(_PENDING_NEXT)) or url_for("organize.index")
        return _finish_login(user, target)
    return render_template("auth/code.html", form=form, error=None)


@bp.post("/account/logout")
def logout() -> ResponseReturnValue:
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("auth.login"))


@bp.route("/account/signup", methods=["GET", "POST"])
def signup() -> ResponseReturnValue:
    form = SignupForm()
    if form.validate_on_submit():
        try:
            accounts.sign_up(db.session, name=form.name.data or "", email=form.email.data or "",
                             password=form.password.data or "")
        except InvalidEmail as error:
            form.email.errors = [str(error)]
        except AccountError as error:
            form.password.errors = [str(error)]
        else:
            db.session.commit()
            # The same page whether the address was new or had an account already.
            return redirect(url_for("auth.signup_sent"), 303)
    return render_template("auth/signup.html", form=form, open=current_app.config["SIGNUPS_OPEN"])


@bp.get("/account/signup/sent")
def signup_sent() -> str:
    return render_template("auth/sent.html", what="signup")


def _private(response: Any) -> ResponseReturnValue:
    # The URL carries a token: keep it out of caches and other sites' Referer headers.
    response = make_response(response)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return cast(Response, response)


@bp.route("/account/confirm/<token>", methods=["GET", "POST"])
def verify(token: str) -> ResponseReturnValue:
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            user = accounts.verify_account(db.session, token)
        except TokenInvalid as error:
            return _private(_error_page("auth/bad_link.html", 410 if error.reason == "expired" else 404,
                                        message=str(error)))
        db.session.commit()
        if user.status == UserStatus.ACTIVE:
            flash("Your address is confirmed. You can sign in now.")
        else:
            flash("Your address is confirmed. An administrator will approve your account; "
                  "you can sign in once that is done.")
        return _private(redirect(url_for("auth.login"), 303))
    return _private(render_template("auth/verify.html", form=form))


@bp.route("/account/forgot", methods=["GET", "POST"])
def forgot() -> ResponseReturnValue:
    form = ForgotForm()
    if form.validate_on_submit():
        try:
            accounts.request_password_reset(db.session, form.email.data or "", request.remote_addr)
        except Throttled as error:
            db.session.commit()
            return _error_page("auth/forgot.html", 429, error.retry_after, form=form, error=str(error))
        db.session.commit()
        return redirect(url_for("auth.forgot_sent"), 303)
    return render_template("auth/forgot.html", form=form, error=None)


@bp.get("/account/forgot/sent")
def forgot_sent() -> str:
    return render_template("auth/sent.html", what="reset")


@bp.route("/account/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> ResponseReturnValue:
    try:
        user = accounts.user_for_reset_token(db.session, token)
    except TokenInvalid as error:
        return _private(_error_page("auth/bad_link.html", 410 if error.reason == "expired" else 404,
                                    message=str(error)))
    form = NewPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(db.session, token, form.password.data or "")
        except TokenInvalid as error:
            return _private(_error_page("auth/bad_link.html", 404, message=str(error)))
        except AccountError as error:
            form.password.errors = [str(error)]
        else:
            db.session.commit()
            logout_user()
            session.clear()
            flash("Your password is changed. Sign in with the new one.")
            return _private(redirect(url_for("auth.login"), 303))
    return _private(render_template("auth/reset.html", form=form, email=user.email))


# --- settings (signed in) ---------------------------------------------------------------------

def _signed_in() -> Response | None:
    if not current_user.is_authenticated:
        return cast(Response, login_manager.unauthorized())
    return None


def _qr_data_uri(uri: str) -> str:
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#1d1d1b", light="#ffffff")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@bp.get("/account")
def settings() -> ResponseReturnValue:
    if (refused := _signed_in()) is not None:
        return refused
    user = me()
    return render_template("auth/settings.html", password_form=ChangePasswordForm(),
                           disable_form=DisableTotpForm(), user=user,
                           totp_mandatory=accounts.totp_mandatory(user))


@bp.post("/account/password")
def change_password() -> ResponseReturnValue:
    if (refused := _signed_in()) is not None:
        return refused
    user = me()
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(db.session, user, form.current.data or "", form.password.data or "")
        except AccountError as error:
            form.password.errors = [str(error)]
        else:
            db.session.commit()
            login_user(user)  # the session token rotated: this session carries the new one
            flash("Your password is changed. Other devices are signed out.")
            return redirect(url_for("auth.settings"), 303)
    return make_response(render_template("auth/settings.html", password_form=form,
                                         disable_form=DisableTotpForm(), user=user,
                                         totp_mandatory=accounts.totp_mandatory(user)), 400)


@bp.route("/account/totp", methods=["GET", "POST"])
def totp_setup() -> ResponseReturnValue:
    if (refused := _signed_in()) is not None:
        return refused
    user = me()
    form = CodeForm()
    secret = session.get(_TOTP_SETUP)
    if not isinstance(secret, str) or request.method == "GET":
        secret = accounts.new_totp_secret()
        session[_TOTP_SETUP] = secret
    status = 200
    if form.validate_on_submit():
        if accounts.enable_totp(db.session, user, secret, form.code.data or ""):
            session.pop(_TOTP_SETUP, None)
            db.session.commit()
            flash("Two-step sign-in is on. You will be asked for a code each time you sign in.")
            return redirect(url_for("auth.settings"), 303)
        form.code.errors = ["That code is not right. Check the time on your phone and try the next code."]
        status = 400
    uri = accounts.totp_uri(user, secret)
    return _private(make_response(render_template(
        "auth/totp.html", form=form, secret=secret, qr=_qr_data_uri(uri),
        mandatory=accounts.totp_mandatory(user) and not user.has_totp), status))


@bp.post("/account/totp/disable")
def totp_disable() -> ResponseReturnValue:
    if (refused := _signed_in()) is not None:
        return refused
    user = me()
    form = DisableTotpForm()
    if form.validate_on_submit():
        try:
            accounts.disable_totp(db.session, user, form.password.data or "")
        except AccountError as error:
            flash(str(error))
            return redirect(url_for("auth.settings"), 303)
        db.session.commit()
        flash("Two-step sign-in is off.")
    return redirect(url_for("auth.settings"), 303)


# --- invitations ----------------------------------------------------------------------------

@bp.route("/invitations/confirm/<token>", methods=["GET", "POST"])
def invitation(token: str) -> ResponseReturnValue:
    """Join a campaign: signed in, one button; otherwise sign in or create an account here.

    The link itself proves the invited address, so an account made here is active at once.
    """
    try:
        invite = invitation_for_token(db.session, token)
    except OrganizingError as error:
        return _private(_error_page("auth/bad_link.html", 404, message=str(error)))
    campaign = db.session.get(Campaign, invite.campaign_id)
    join_form, login_form = ButtonForm(prefix="join"), InvitedLoginForm(prefix="login")
    signup_form = InvitedSignupForm(prefix="signup")
    message: str | None = None
    status = 200
    action = request.form.get("action") if request.method == "POST" else None
    user: User | None = me() if current_user.is_authenticated else None
    try:
        if user is not None and action == "join" and join_form.validate_on_submit():
            return _private(_join(user, invite))
        if user is None and action == "login" and login_form.validate_on_submit():
            found = accounts.authenticate(db.session, invite.email, login_form.password.data or "",
                                          request.remote_addr)
            if found.has_totp:
                session[_PENDING_2FA] = found.get_id()
                session[_PENDING_2FA_AT] = int(time.time())
                session[_PENDING_NEXT] = request.path
                db.session.commit()
                return _private(redirect(url_for("auth.login_code"), 303))
            return _private(_join(found, invite, sign_in=True))
        if user is None and action == "signup" and signup_form.validate_on_submit():
            created = accounts.create_invited_account(
                db.session, email=invite.email, name=signup_form.name.data or "",
                password=signup_form.password.data or "")
            return _private(_join(created, invite, sign_in=True))
    except Throttled as problem:
        db.session.commit()
        message, status = str(problem), 429
    except (BadCredentials, NotActive) as problem:
        db.session.commit()
        message, status = str(problem), 401
    except (AccountError, OrganizingError) as problem:
        db.session.rollback()
        message, status = str(problem), 400
    if action and message is None and request.method == "POST":
        status = 400
    return _private(make_response(render_template(
        "auth/invitation.html", invite=invite, campaign=campaign, error=message, join_form=join_form,
        login_form=login_form, signup_form=signup_form), status))


def _join(user: User, invite: Invitation, sign_in: bool = False) -> ResponseReturnValue:
    joined = accept_invitation(db.session, user, invite)
    flash(f"You now organize “{joined.name}”.")
    target = url_for("organize.campaign", campaign_id=joined.id)
    if sign_in:
        return _finish_login(user, target)
    db.session.commit()
    return redirect(target, 303)
