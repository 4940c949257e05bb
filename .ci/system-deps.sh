#!/bin/sh
# Install the Debian packages labinterp uses when they are missing, when we can (root with
# apt); otherwise say so and go on. Arguments: which ones (default: all of them).
#   chromium             the audit report's test loads the report in a real browser
#                        (without it that test skips and says why)
#   libharfbuzz-subset0  WeasyPrint subsets the handouts' fonts with HarfBuzz instead of
#                        fontTools: faster handouts and smaller PDFs (optional)
wanted="${*:-chromium libharfbuzz-subset0}"
need=""
for pkg in $wanted; do
    case "$pkg" in
        chromium) command -v chromium >/dev/null 2>&1 && continue ;;
        *) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" && continue ;;
    esac
    need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$need" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need) >/dev/null 2>&1 \
        || echo "could not install$need; labinterp works without them (see the README)" >&2
else
    echo "not installing$need (needs root and apt); labinterp works without them (see the README)" >&2
fi
exit 0
