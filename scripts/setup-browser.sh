#!/usr/bin/env bash
# Debian's Chromium (and a CJK font for the Chinese pages) for the dashboard's browser tests.
# Playwright from PyPI drives it; nothing downloads a browser of its own. Idempotent; without
# root (or password-less sudo) it says what to run and exits 0, and the browser tests skip.
set -euo pipefail
if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi 'wenquanyi'; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "setup-browser: not root; run 'sudo apt-get install chromium fonts-wqy-microhei'" \
       "for the dashboard's browser tests (they skip until then)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null
/usr/bin/chromium --version
