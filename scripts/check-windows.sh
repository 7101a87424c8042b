#!/usr/bin/env bash
# CI: the Windows build, checked on Linux under Wine (Debian's wine64, run
# as `wine`) in a throw-away prefix, against the Linux pos-sandbox on
# 127.0.0.1:
#   1. pos-connector.exe --version; --setup-password (the secrets store's
#      key wrapped with DPAPI) and check-config on a ProgramData-style
#      config whose relative folders resolve beside it;
#   2. one sale end to end from the CLI: invoice create, submit, pdf;
#   3. the service under Wine's Service Control Manager: service install
#      --start, a sale dropped in the inbox reaches its official PDF,
#      service status / stop / uninstall;
#   4. `run` in a console stops cleanly on Ctrl-C (SIGINT to the Wine
#      process) and reports its warnings to the Event Log (seen through
#      Wine's eventlog debug channel: Wine keeps no log);
#   5. the library's unit tests from the cross-compiled test executable,
#      among them the Windows-only ones (service control, console events,
#      DPAPI, ACL, Event Log);
#   6. the MSI: msiinfo's File, Component, ServiceControl, CustomAction and
#      InstallExecuteSequence rows; msiexec /i under Wine (files, service,
#      Event Log source), an edited config.json kept by /x and by a fresh /i.
# Wine cannot check everything (ACL contents, Event Viewer, Ctrl-Break /
# close / logoff / shutdown, delayed start, DPAPI's machine binding): see
# the README, "Windows under Wine".
#
# Usage: scripts/check-windows.sh [EXE [TEST_EXE [MSI]]]
#   defaults: what scripts/package.sh built (target/windows/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

EXE=$(realpath "${1:-target/x86_64-pc-windows-gnu/release/pos-connector.exe}")
TEST_EXE=${2:-$(cat target/windows/unit-tests 2>/dev/null || true)}
MSI=${3:-$(cat target/windows/latest-msi 2>/dev/null || true)}
SANDBOX=${POS_SANDBOX:-}
if [ -z "$SANDBOX" ]; then
    for s in target/debug/pos-sandbox target/release/pos-sandbox; do
        if [ -x "$s" ]; then SANDBOX=$s; break; fi
    done
fi
if [ -z "$SANDBOX" ]; then
    cargo build --locked -p pos-sandbox
    SANDBOX=target/debug/pos-sandbox
fi
SANDBOX=$(realpath "$SANDBOX")

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null &&
            $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null
    }
}
command -v wine >/dev/null 2>&1 || { echo "== installing wine"; apt_install wine64 wine; }
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || apt_install gcc-mingw-w64-x86-64-win32
command -v msiinfo >/dev/null 2>&1 || apt_install msitools

fail() { echo "FAIL: $*" >&2; exit 1; }
# Polls `cond` (a command) every 0.2 s until it succeeds or SECS pass.
wait_for() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
winpath() { local p=${1//\//\\}; echo "Z:$p"; }

work=$(mktemp -d /tmp/pos-wine.XXXXXX)
export WINEPREFIX=$work/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
sandbox_pid=""
cleanup() {
    set +e
    [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null
    if [ -d "$WINEPREFIX" ]; then wineserver -k 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== wine prefix (with the ProcessPrng shim, for Wine only)"
wineboot --init >/dev/null 2>&1 || fail "wineboot --init"
x86_64-w64-mingw32-gcc -shared -O2 -s -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
    packaging/windows/wine-shim/bcryptprimitives.c -ladvapi32
# Then one persistent wineserver for every call below (each call is then
# ~0.5 s), once wineboot's own has gone.
wineserver -w
wineserver -p || fail "wineserver -p"
pc() { wine "$EXE" "$@"; }

echo "== the Event Log's message table is in the exe"
x86_64-w64-mingw32-objdump -h "$EXE" | grep -q '\.rsrc' || fail "no resource section (build.rs: windmc/windres)"

echo "== --version"
v=$(pc --version | tr -d '\r')
[ "$v" = "pos-connector $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] ||
    fail "--version printed: $v"
echo "$v"

echo "== the Linux sandbox on 127.0.0.1"
"$SANDBOX" --port 0 --qbo-port 0 >"$work/sandbox.out" 2>&1 &
sandbox_pid=$!
wait_for 30 grep -q '^sandbox listening on' "$work/sandbox.out" || fail "sandbox: $(cat "$work/sandbox.out")"
base=$(sed -n 's/^sandbox listening on \(http[^ ]*\).*/\1/p' "$work/sandbox.out")
echo "$base"

echo "== a ProgramData-style config, relative folders"
pd=$WINEPREFIX/drive_c/ProgramData/pos-connector
mkdir -p "$pd"
write_config() { # $1 = extra keys
    cat >"$pd/config.json" <<EOF
{
  "base_url": "$base",
  "email": "vendor@sandbox.test",
  "sync_interval": 1,
  "invoice_folder": "inbox",
  "data_dir": "data",
  "log_dir": "logs",
  "pdf_dir": "data/pdfs",
  "intake": { "settle_seconds": 1 },
  "local_api": { "enabled": false },
  "receipts": { "enabled": true, "dir": "receipts" }$1
}
EOF
}
write_config ""
CFG='C:\ProgramData\pos-connector\config.json'
echo sandbox-password | pc --config "$CFG" --setup-password >"$work/setup.out" 2>&1 ||
    fail "--setup-password: $(cat "$work/setup.out")"
head -c 10 "$pd/data/secret.key" | grep -q 'PCK-DPAPI1' ||
    fail "secret.key is not DPAPI-wrapped: $(head -c 16 "$pd/data/secret.key" | od -c | head -2)"
out=$(pc --config "$CFG" check-config | tr -d '\r') || fail "check-config: $out"
echo "$out" | grep -qF 'config file: C:\ProgramData\pos-connector\config.json (relative paths in it resolve against C:\ProgramData\pos-connector)' ||
    fail "check-config: $out"
echo "$out" | grep -qF 'data_dir: C:\ProgramData\pos-connector\data' || fail "check-config: $out"
echo "$out" | grep -qF 'invoice_folder: C:\ProgramData\pos-connector\inbox' || fail "check-config: $out"
echo "$out" | grep -q 'config OK' || fail "check-config: $out"
echo "check-config OK; password stored, its key DPAPI-wrapped"

echo "== one sale from the CLI: create, submit, pdf"
cat >"$work/sale.json" <<'EOF'
{"invoice_number": "WIN-CLI-1", "customer_name": "Wine test", "items": [{"description": "Coffee", "quantity": 2, "price": 1.5}]}
EOF
created=$(pc --config "$CFG" --json invoice create "$(winpath "$work/sale.json")" | tr -d '\r') ||
    fail "invoice create: $created"
id=$(echo "$created" | grep -o '"id": *[0-9]*' | head -1 | grep -o '[0-9]*$')
[ -n "$id" ] || fail "invoice create printed no id: $created"
pc --config "$CFG" invoice submit "$id" >"$work/submit.out" 2>&1 || fail "invoice submit: $(cat "$work/submit.out")"
pc --config "$CFG" invoice pdf "$id" --out "$(winpath "$work/cli.pdf")" >/dev/null 2>&1 || fail "invoice pdf"
[ "$(head -c 5 "$work/cli.pdf")" = "%PDF-" ] || fail "invoice pdf: not a PDF"
echo "invoice $id created, submitted, PDF $(stat -c %s "$work/cli.pdf") bytes"

echo "== the service under Wine's SCM: install, a sale through the inbox, stop, uninstall"
pc --config "$CFG" service install --start >"$work/install.out" 2>&1 || fail "service install: $(cat "$work/install.out")"
tr -d '\r' <"$work/install.out"
grep -q 'registered the Event Log source' "$work/install.out" || fail "no Event Log source"
wine reg query 'HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\pos-connector' /v EventMessageFile 2>/dev/null |
    tr -d '\r' | grep -qi 'pos-connector.exe' || fail "Event Log source not in the registry"
running() { pc service status >/dev/null 2>&1; }
wait_for 30 running || fail "the service is not running: $(pc service status 2>&1)"
mkdir -p "$pd/inbox"
cat >"$pd/inbox/win-svc-1.json" <<'EOF'
{"invoice_number": "WIN-SVC-1", "customer_name": "Wine service", "items": [{"description": "Tea", "quantity": 1, "price": 2.25}]}
EOF
pdf_saved() { ls "$pd/data/pdfs/" 2>/dev/null | grep -q 'WIN-SVC-1.*\.pdf$'; }
wait_for 120 pdf_saved || fail "the service did not save WIN-SVC-1's PDF: $(tail -20 "$pd"/logs/pos-connector.log.* 2>/dev/null)"
[ -n "$(ls "$pd/receipts/" 2>/dev/null)" ] || fail "no provisional receipt"
ls -R "$pd/inbox/archive/" | grep -q "win-svc-1" || fail "the sale file was not archived"
echo "the service took the sale: $(ls "$pd/data/pdfs/" | grep WIN-SVC-1)"
# Installing again over the running service updates it and starts it again.
pc --config "$CFG" service install --start >"$work/reinstall.out" 2>&1 ||
    fail "service install over the installed service: $(cat "$work/reinstall.out")"
grep -q 'updated the installed service' "$work/reinstall.out" || fail "reinstall: $(cat "$work/reinstall.out")"
wait_for 30 running || fail "the service is not running after the update: $(pc service status 2>&1)"
echo "installing again updated the running service and started it again"
pc service stop >/dev/null 2>&1 || fail "service stop"
out=$(pc service status 2>&1 | tr -d '\r') && fail "status after stop exits 0: $out"
echo "$out" | grep -q 'stopped' || fail "status after stop: $out"
grep -q 'pos-connector stopped' "$pd"/logs/pos-connector.log.* || fail "the service did not stop cleanly"
pc service uninstall >"$work/uninstall.out" 2>&1 || fail "service uninstall: $(cat "$work/uninstall.out")"
out=$(pc service status 2>&1 | tr -d '\r') || true
echo "$out" | grep -q 'not installed' || fail "status after uninstall: $out"
if wine reg query 'HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\pos-connector' >/dev/null 2>&1; then
    fail "the Event Log source is still registered"
fi
echo "stopped cleanly, uninstalled (Event Log source removed)"

echo "== run in a console: Ctrl-C stops it cleanly; warnings reach the Event Log"
# A token without token_expiry is a config warning, logged at the start.
write_config ', "token": "ci-placeholder-not-a-real-token"'
WINEDEBUG=warn+eventlog wine "$EXE" --config "$CFG" run >"$work/run.out" 2>"$work/run.err" &
run_job=$!
wait_for 60 grep -q 'pos-connector running' "$work/run.out" || fail "run did not start: $(cat "$work/run.out" "$work/run.err")"
pid=$(pgrep -f 'pos-connector\.exe.* run$' | head -1)
[ -n "$pid" ] || fail "no Wine process for run"
kill -INT "$pid"
stopped() { ! kill -0 "$run_job" 2>/dev/null; }
wait_for 60 stopped || fail "run did not stop on Ctrl-C"
wait "$run_job" || fail "run exited $? after Ctrl-C: $(tail -5 "$work/run.out")"
grep -q 'stop requested' "$work/run.out" || fail "no 'stop requested': $(tail -5 "$work/run.out")"
grep -q 'pos-connector stopped' "$work/run.out" || fail "not stopped cleanly"
grep 'ReportEventW' "$work/run.err" | grep -q 'has a token but no token_expiry' ||
    fail "the warning did not reach the Event Log: $(grep -i eventlog "$work/run.err" | head -5)"
if grep 'ReportEventW' "$work/run.err" | grep -q 'pos-connector running'; then
    fail "info lines reach the Event Log"
fi
if grep -q 'ci-placeholder-not-a-real-token' "$work/run.out" "$work/run.err"; then
    fail "the token reached a log"
fi
echo "Ctrl-C: stopped cleanly, exit 0; the config warning is in the Event Log, info lines are not"
write_config ""

if [ -n "$TEST_EXE" ]; then
    echo "== unit tests under Wine: $(basename "$TEST_EXE")"
    # The whole library suite: platform:: is the Windows code (SCM handler
    # and registration, console events, DPAPI, ACL, Event Log); config,
    # secret, fsutil, store, ... are where Windows paths and files differ.
    wine "$TEST_EXE" 2>&1 | tr -d '\r' | tee "$work/unit.out" | grep -E '^test result|FAILED|panicked' || true
    grep -q '^test result: ok\. [1-9][0-9]* passed; 0 failed' "$work/unit.out" ||
        fail "unit tests under Wine: $(tail -30 "$work/unit.out")"
    for t in win_eventlog win_security windows::tests; do
        grep -q "platform::$t.* ok$" "$work/unit.out" || fail "no $t tests ran"
    done
else
    echo "== unit tests under Wine skipped: no test executable given (scripts/package.sh builds it)"
fi

if [ -n "$MSI" ]; then
    echo "== the MSI: tables"
    table() { msiinfo export "$MSI" "$1" | tail -n +4 | tr -d '\r'; }
    table File | grep -q $'\tMainExe\tpos-connector.exe\t' || fail "File: no pos-connector.exe: $(table File)"
    table File | grep -q $'\tConfig\tconfig.json\t' || fail "File: no config.json"
    table File | grep -q $'\tExampleConfig\tconfig.example.json\t' || fail "File: no config.example.json"
    table File | grep -q -i 'bcryptprimitives' && fail "the Wine shim is in the MSI"
    table Component | grep -q $'^Config\t{[0-9A-F-]*}\tDATADIR\t400\t' ||
        fail "Component Config is not NeverOverwrite+Permanent (400): $(table Component)"
    table Component | grep -q $'^MainExe\t{[0-9A-F-]*}\tINSTALLDIR\t256\t' || fail "Component MainExe: $(table Component)"
    table Directory | grep -q $'^INSTALLDIR\tProgramFiles64Folder\tpos-connector' || fail "Directory: $(table Directory)"
    table Directory | grep -q $'^DATADIR\tCommonAppDataFolder\tpos-connector' || fail "Directory: $(table Directory)"
    # 3090 = 18 (exe from an installed file) + 1024 deferred + 2048 no impersonation; +64 ignore the exit code.
    table CustomAction | grep -q $'^ServiceInstallAction\t3090\tPosConnectorExe\t--config "\[DATADIR\]config.json" service install --start\t*$' ||
        fail "CustomAction: $(table CustomAction)"
    table CustomAction | grep -q $'^ServiceUninstallAction\t3154\tPosConnectorExe\tservice uninstall\t*$' ||
        fail "CustomAction: $(table CustomAction)"
    table InstallExecuteSequence | grep -q $'^ServiceInstallAction\tNOT Installed AND NOT REMOVE\t5850$' ||
        fail "InstallExecuteSequence: $(table InstallExecuteSequence)"
    table InstallExecuteSequence | grep -q $'^ServiceUninstallAction\tREMOVE="ALL"\t1850$' ||
        fail "InstallExecuteSequence: $(table InstallExecuteSequence)"
    table InstallExecuteSequence | grep -q $'^RemoveExistingProducts\t\t1401$' ||
        fail "RemoveExistingProducts is not right after InstallValidate: $(table InstallExecuteSequence)"
    # 162 = stop on install (2) + stop on uninstall (32) + delete on uninstall (128).
    table ServiceControl | grep -q $'^ServiceRemove\tpos-connector\t162\t\t1\tMainExe$' ||
        fail "ServiceControl: $(table ServiceControl)"
    echo "File, Component, Directory, CustomAction, InstallExecuteSequence, ServiceControl: OK"

    echo "== msiexec under Wine"
    rm -rf "$pd"
    installed="$WINEPREFIX/drive_c/Program Files/pos-connector/pos-connector.exe"
    wine msiexec /i "$(winpath "$(realpath "$MSI")")" /qn /l*v 'C:\msi-install.log' ||
        fail "msiexec /i: $(tr -d '\0' <"$WINEPREFIX/drive_c/msi-install.log" | grep -i 'error\|return value 3' | head)"
    [ -f "$installed" ] || fail "not installed under Program Files"
    [ -f "$pd/config.json" ] && [ -f "$pd/config.example.json" ] || fail "no config under ProgramData"
    out=$(wine "$installed" service status 2>&1 | tr -d '\r') || true
    echo "$out" | grep -q 'not installed' && fail "the MSI did not install the service: $out"
    wine reg query 'HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\pos-connector' >/dev/null 2>&1 ||
        fail "the MSI did not register the Event Log source"
    echo "installed: exe, config, service ($out), Event Log source"
    # An edited config survives the uninstall and a fresh install.
    sed -i 's/"sync_interval": 60/"sync_interval": 61/' "$pd/config.json"
    grep -q '"sync_interval": 61' "$pd/config.json" || fail "could not edit config.json"
    wine msiexec /x "$(winpath "$(realpath "$MSI")")" /qn || fail "msiexec /x"
    [ ! -f "$installed" ] || fail "the exe is still there after /x"
    out=$(wine "$EXE" service status 2>&1 | tr -d '\r') || true
    echo "$out" | grep -q 'not installed' || fail "the service is still there after /x: $out"
    grep -q '"sync_interval": 61' "$pd/config.json" || fail "/x removed or replaced config.json"
    # A service installed by hand from another folder: the MSI takes it
    # over (it used to roll back on "the service already exists").
    wine "$EXE" --config "$(winpath "$pd/config.json")" service install >/dev/null 2>&1 ||
        fail "service install by hand before the MSI"
    wine msiexec /i "$(winpath "$(realpath "$MSI")")" /qn || fail "msiexec /i (again, over a hand-installed service)"
    wine reg query 'HKLM\SYSTEM\CurrentControlSet\Services\pos-connector' /v ImagePath 2>/dev/null | tr -d '\r' |
        grep -qi 'Program Files' || fail "the MSI did not point the hand-installed service at Program Files"
    grep -q '"sync_interval": 61' "$pd/config.json" || fail "a fresh install replaced the edited config.json"
    wine msiexec /x "$(winpath "$(realpath "$MSI")")" /qn || fail "msiexec /x (again)"
    echo "uninstall keeps config.json; a new install does not overwrite it"
else
    echo "== MSI checks skipped: no MSI given (scripts/package.sh builds it)"
fi

echo "== Windows checks passed"
