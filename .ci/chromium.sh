#!/usr/bin/env bash
# CI: make Debian's headless-capable Chromium available for the report test (tests/test_report_chromium.py).
# Installs the `chromium` package with apt when no chromium binary is on PATH; a no-op otherwise.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ci: chromium is missing and this is not root; install it with: sudo apt-get install -y chromium" >&2
  exit 1
fi
echo "ci: installing chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null  # a font for the page text
command -v chromium >/dev/null
