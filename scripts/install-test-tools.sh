#!/usr/bin/env bash
# `make test`: installs the Debian packages the suite runs for real, once. Chromium (headless)
# for tests/test_docs_browser.py; gpg and unzip for tests/test_supply_chain.py's signed
# terraform release check; redis-server for the shared-state tests (harness/redis.py). Idempotent: installs only what is missing. Needs root (apt-get).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v gpg >/dev/null || missing+=(gnupg)
command -v unzip >/dev/null || missing+=(unzip)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-tools: ${missing[*]} missing and this is not root, so the tests that" \
        "need them will be skipped; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
