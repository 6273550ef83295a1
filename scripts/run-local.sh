#!/usr/bin/env bash
# `make run`: the chat function on $PORT (foreground) and the admin function on $ADMIN_PORT
# (background), both serving $SNAPSHOT_URI. The admin token is $ADMIN_TOKEN if set, else a
# fresh random one printed once here. Ctrl-C (or the chat exiting) stops both.
set -euo pipefail

cd "$(dirname "$0")/.."  # the repository root: both functions import chatbot/ from here
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
VENV=${VENV:-.venv}
PORT=${PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-8081}
FF="$VENV/bin/functions-framework"

if [ -z "${ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
  echo "admin: http://localhost:$ADMIN_PORT  (generated for this run) X-Admin-Token: $ADMIN_TOKEN"
else
  echo "admin: http://localhost:$ADMIN_PORT  (X-Admin-Token: the ADMIN_TOKEN you set)"
fi
echo "chat:  http://localhost:$PORT"

# Only the admin function gets the token; the chat function never needs it.
ADMIN_TOKEN="$ADMIN_TOKEN" "$FF" --target admin --source functions/admin/main.py \
  --port "$ADMIN_PORT" &
admin_pid=$!
stop_admin() {
  kill "$admin_pid" 2>/dev/null || true
  wait "$admin_pid" 2>/dev/null || true
}
trap stop_admin EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

env -u ADMIN_TOKEN "$FF" --target chat --source functions/chat/main.py --port "$PORT"
