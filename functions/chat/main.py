"""Public chat function: functions-framework sends every path here; the app dispatches."""

import flask
import functions_framework

from chatbot.config import Settings
from chatbot.web import create_chat_app

# A bad variable stops start-up here, with its name; everything expensive waits for a request.
app = create_chat_app(Settings.from_env())


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    """Entry point of the chat Cloud Function."""
    return app(request)


functions_framework.errorhandler(404)(app.not_found)
