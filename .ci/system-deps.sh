#!/bin/sh
# Install the Debian package a test uses: chromium (the audit report checked in a real
# browser). Skips quietly when it is present or apt is unavailable.
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$need" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need) >/dev/null 2>&1 \
        || echo "could not install$need; the tests that need them will skip" >&2
else
    echo "not installing$need (needs root and apt); the tests that need them will skip" >&2
fi
exit 0
