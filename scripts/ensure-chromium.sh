#!/usr/bin/env bash
# Headless Chromium checks the clinical report as a browser shows it (tests marked `browser`: no
# sideways scrolling at 1280 px, the summary on the first screen). Install Debian's chromium through
# apt when it is missing and we can.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing chromium (Debian package) for the report's browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null) \
    && exit 0
fi
echo "warning: chromium is not installed and could not be installed automatically." >&2
echo "         Install it (Debian: sudo apt-get install chromium; Ubuntu: the chromium snap or package)" >&2
echo "         to run the report's browser tests; they skip without it." >&2
exit 0
