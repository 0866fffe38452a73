#!/usr/bin/env bash
# espeak-ng synthesises the demo cohort's speech. Install it through apt when missing and we can.
set -u
if command -v espeak-ng >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing espeak-ng (Debian package) for the demo speech"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
    && exit 0
fi
echo "warning: espeak-ng is not installed and could not be installed automatically." >&2
echo "         Install it (Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng)" >&2
echo "         to generate demo speech; the rest of the pipeline works without it." >&2
exit 0
