#!/usr/bin/env bash
# Best effort: install Debian's Chromium for the app's browser test. Never fails `make test`: without
# Chromium the browser test is skipped and says why.
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser test (first time only)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Could not install chromium: the browser test will be skipped."
else
  echo "chromium is not installed (and this user cannot apt-get it): the browser test will be skipped."
fi
exit 0
