#!/usr/bin/env bash
# CI: installs the .deb that scripts/package.sh built on this machine
# (as root), checks what it put where, then removes it again.
#   the pos-connector system user; /usr/bin/pos-connector; the unit, which
#   `systemd-analyze verify` accepts and `systemd-analyze security` scores
#   2.0 or better; /var/lib/pos-connector 0700 and /var/log/pos-connector
#   owned by the user; /etc/pos-connector/config.json a conffile readable
#   by the user only through its group; completions and the man page;
#   `pos-connector check-config` as the service user; remove keeps data.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "error: scripts/check-deb.sh installs a package: run it as root" >&2
    exit 2
fi
deb=$(cat target/debian/latest)
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "== installing systemd (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q systemd >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && apt-get install -y -q systemd >/dev/null
    }
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
mode() { stat -c '%a %U:%G' "$1"; }

if dpkg -s pos-connector >/dev/null 2>&1; then
    fail "pos-connector is already installed here; remove it first (dpkg -P pos-connector)"
fi
echo "== dpkg -i $deb"
dpkg -i "$deb" >/dev/null

getent passwd pos-connector | grep -q ':/var/lib/pos-connector:/usr/sbin/nologin$' ||
    fail "no pos-connector system user: $(getent passwd pos-connector || true)"
[ "$(id -u pos-connector)" -lt 1000 ] || fail "pos-connector is not a system user"
[ -x /usr/bin/pos-connector ] || fail "/usr/bin/pos-connector missing"
[ "$(mode /var/lib/pos-connector)" = "700 pos-connector:pos-connector" ] ||
    fail "/var/lib/pos-connector is $(mode /var/lib/pos-connector)"
[ "$(mode /var/log/pos-connector)" = "750 pos-connector:pos-connector" ] ||
    fail "/var/log/pos-connector is $(mode /var/log/pos-connector)"
[ "$(mode /etc/pos-connector/config.json)" = "640 root:pos-connector" ] ||
    fail "config.json is $(mode /etc/pos-connector/config.json)"
dpkg-query -W -f='${Conffiles}\n' pos-connector | grep -q '/etc/pos-connector/config.json' ||
    fail "config.json is not a conffile"
for f in /usr/lib/systemd/system/pos-connector.service \
    /usr/share/man/man1/pos-connector.1.gz \
    /usr/share/bash-completion/completions/pos-connector \
    /usr/share/zsh/vendor-completions/_pos-connector \
    /usr/share/fish/vendor_completions.d/pos-connector.fish; do
    [ -s "$f" ] || fail "$f missing"
done

echo "== systemd-analyze verify"
# verify only warns (exit 0) about a bad value: any output is a failure.
verify=$(systemd-analyze verify /usr/lib/systemd/system/pos-connector.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
echo "== systemd-analyze security"
score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/pos-connector.service 2>/dev/null |
    sed -n 's/.*Overall exposure level for pos-connector.service: \([0-9.]*\).*/\1/p')
echo "exposure: $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || fail "exposure $score is above 2.0"

echo "== check-config as the service user"
out=$(runuser -u pos-connector -- env POS_CONNECTOR_PASSWORD=ci-placeholder \
    /usr/bin/pos-connector check-config) || fail "check-config failed: $out"
echo "$out" | grep -q 'data_dir: /var/lib/pos-connector' || fail "check-config: $out"
echo "$out" | grep -q 'config file: /etc/pos-connector/config.json' || fail "check-config: $out"
# The service user can create its state (the outbox) where the unit says.
runuser -u pos-connector -- /usr/bin/pos-connector queue list >/dev/null ||
    fail "queue list as pos-connector failed"
[ -n "$(ls -A /var/lib/pos-connector)" ] || fail "nothing written to /var/lib/pos-connector"
# Another user cannot read the config or the state.
if runuser -u nobody -- cat /etc/pos-connector/config.json >/dev/null 2>&1; then
    fail "nobody can read config.json"
fi

echo "== dpkg -r / -P"
dpkg -r pos-connector >/dev/null
[ ! -e /usr/bin/pos-connector ] || fail "binary left after remove"
[ -d /var/lib/pos-connector ] || fail "remove deleted the data"
[ -f /etc/pos-connector/config.json ] || fail "remove deleted the config"
dpkg -P pos-connector >/dev/null
[ ! -e /var/log/pos-connector ] || fail "purge left the logs"
[ -d /var/lib/pos-connector ] || fail "purge deleted the outbox"
rm -rf /var/lib/pos-connector
userdel pos-connector 2>/dev/null || true
echo "deb checks passed"
