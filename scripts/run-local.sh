#!/usr/bin/env bash
# `make run`: the chat function on $PORT (foreground) and the admin function on $ADMIN_PORT
# (background), both serving $SNAPSHOT_URI, and the demo company page with the website widget
# on $DEMO_PORT (another origin, as a real site; scripts/demo_site.py). The admin token is
# $ADMIN_TOKEN if set, else a fresh random one printed once here. Ctrl-C (or the chat
# exiting) stops them all.
#
# Both listen on $HOST (127.0.0.1 unless set): this machine only, since locally nothing
# stands in front of gunicorn the way Google's front end does in the cloud (docs/deploy.md,
# "Request limits: production and local").
set -euo pipefail

cd "$(dirname "$0")/.."  # the repository root: both functions import chatbot/ from here
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
VENV=${VENV:-.venv}
PORT=${PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-8081}
DEMO_PORT=${DEMO_PORT:-8082}
HOST=${HOST:-127.0.0.1}
# The demo page calls the chat function from its own origin: CORS must allow it.
export ALLOWED_ORIGINS="${ALLOWED_ORIGINS:+$ALLOWED_ORIGINS,}http://$HOST:$DEMO_PORT"

# gunicorn's request limits. The functions-framework CLI cannot set them: its gunicorn
# application ignores GUNICORN_CMD_ARGS and hard-codes limit_request_line=0 (no limit), so a
# 64 MB URL was read for minutes. serve() runs the same functions_framework create_app and
# create_server as the CLI (same gthread worker, THREADS, WORKERS) and hands them the settings
# in GUNICORN_CMD_ARGS, parsed by gunicorn's own option parser. Set GUNICORN_CMD_ARGS to
# override them all; any gunicorn option is accepted. (No gunicorn option bounds a client
# that trickles its headers to the gthread worker: --timeout is the worker's heartbeat, which
# its main loop keeps sending. Hence $HOST.)
export GUNICORN_CMD_ARGS=${GUNICORN_CMD_ARGS:---limit-request-line 8190 --limit-request-field_size 8190 --limit-request-fields 100}

serve() {  # serve TARGET SOURCE PORT
  "$VENV/bin/python" -c '
import os, shlex, sys
from functions_framework import create_app
from functions_framework._http import create_server
from gunicorn.config import Config

target, source, host, port = sys.argv[1:]
parsed = Config().parser().parse_args(shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "")))
options = {k: v for k, v in vars(parsed).items() if v is not None and k != "args"}
create_server(create_app(target, source), False, **options).run(host, int(port))
' "$1" "$2" "$HOST" "$3"
}

if [ -z "${ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
  echo "admin: http://$HOST:$ADMIN_PORT  (generated for this run) X-Admin-Token: $ADMIN_TOKEN"
else
  echo "admin: http://$HOST:$ADMIN_PORT  (X-Admin-Token: the ADMIN_TOKEN you set)"
fi
echo "chat:  http://$HOST:$PORT"
echo "demo:  http://$HOST:$DEMO_PORT  (the company page with the website widget)"

# Only the admin function gets the token; the chat function never needs it.
ADMIN_TOKEN="$ADMIN_TOKEN" serve admin functions/admin/main.py "$ADMIN_PORT" &
admin_pid=$!
"$VENV/bin/python" scripts/demo_site.py --host "$HOST" --port "$DEMO_PORT" \
  --chat-url "http://$HOST:$PORT" >/dev/null &
demo_pid=$!
stop_background() {
  kill "$admin_pid" "$demo_pid" 2>/dev/null || true
  wait "$admin_pid" "$demo_pid" 2>/dev/null || true
}
trap stop_background EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unset ADMIN_TOKEN
serve chat functions/chat/main.py "$PORT"
