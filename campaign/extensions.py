"""Flask extensions, created unbound here and bound to an app in create_app()."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
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
# Not bound to any app: each app builds its own Limiter (campaign/web/ratelimit.py, current_limiter),
# since one shared Limiter keeps the first app's RATELIMIT_ENABLED and storage. Do not decorate with it.
limiter = Limiter(key_func=get_remote_address)
