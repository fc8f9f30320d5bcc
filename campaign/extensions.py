"""Flask extensions, created unbound here and bound to an app in create_app()."""

from flask_babel import Babel
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from campaign.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate(compare_type=True, render_as_batch=True)
csrf = CSRFProtect()
mail = Mail()
login_manager = LoginManager()
# Rate limits: each app builds its own Limiter (campaign/web/ratelimit.py): a shared one would keep
# the first app's RATELIMIT_ENABLED and storage for every later app of the process.
# Interface and supporter email languages (issue 5): campaign/web/i18n.py binds it.
babel = Babel()
