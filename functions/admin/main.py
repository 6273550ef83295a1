"""Private admin function: functions-framework sends every path here; the app dispatches."""

import flask
import functions_framework

from chatbot.config import Settings
from chatbot.web import create_admin_app

# A bad variable stops start-up here, with its name; the bucket is opened on first use.
app = create_admin_app(Settings.from_env())


@functions_framework.http
def admin(request: flask.Request) -> flask.Response:
    """Entry point of the admin Cloud Function."""
    return app(request)


functions_framework.errorhandler(404)(app.not_found)
