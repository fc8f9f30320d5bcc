"""The organizer's email status page (/organize/petitions/<id>/emails): where the petition's
emails are, whether they run late, and why one signer's message is waiting.

On the organizer blueprint's footing: the same sign-in check, layout and 404 for another
campaign's petition (organizing.petition_for). The look-up is a POST with session CSRF, so an
address never appears in a URL or an access log.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from campaign.extensions import db
from campaign.services import organizing
from campaign.services.email_status import STATES, SignerLookup, petition_email_status, signer_emails
from campaign.services.organizing import NotFound
from campaign.web import organize
from campaign.web.auth import me

bp = Blueprint("email_status", __name__, url_prefix="/organize")
bp.before_request(organize._signed_in_organizers_only)
bp.register_error_handler(NotFound, organize._not_found)
bp.register_error_handler(organizing.Forbidden, organize._forbidden)
bp.context_processor(organize._layout_context)


class LookupForm(FlaskForm):
    email = StringField("Signer's email address", validators=[DataRequired(), Length(max=320)])


@bp.route("/petitions/<int:petition_id>/emails", methods=["GET", "POST"])
def page(petition_id: int) -> tuple[str, int]:
    petition = organizing.petition_for(db.session, me(), petition_id)
    threshold = float(current_app.config["EMAIL_DELAY_WARNING_SECONDS"])
    status = petition_email_status(db.session, petition, threshold)
    form = LookupForm()
    lookup: SignerLookup | None = None
    if form.validate_on_submit():
        lookup = signer_emails(db.session, petition, form.email.data or "")
    db.session.rollback()  # read only
    html = render_template("organize/email_status.html", petition=petition, campaign=petition.campaign,
                           status=status, states=STATES, form=form, lookup=lookup,
                           threshold_minutes=max(1, round(threshold / 60)))
    return html, 400 if form.errors else 200
