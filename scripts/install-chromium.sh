#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for tests/test_docs_browser.py, once.
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (apt-get).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: /usr/bin/chromium is missing and this is not root, so the" \
        "browser test will be skipped; install it with: sudo apt-get install chromium" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
