#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright (playwright's own browser download cannot
# reach the network here). Install it when missing; needs root (or sudo) and apt.
set -euo pipefail
CHROMIUM="${WORKBENCH_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ensure_chromium: $CHROMIUM is missing and we are not root; install Debian's 'chromium' package" >&2
    exit 1
  fi
fi
echo "ensure_chromium: installing Debian's chromium for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x "$CHROMIUM"
