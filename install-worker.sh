#!/bin/sh
# Installs the XWCH volunteer worker for the current user:
#
#   ./install-worker.sh --coordinator http://coord:8750 --token WORKER_TOKEN [PREFERENCES]
#
# It makes a virtualenv in $XWCH_HOME/venv (XWCH_HOME defaults to ~/.xwch), installs XWCH in it,
# then runs `xwch-worker install` with the arguments given (`xwch-worker install --help` lists
# the preferences). `./install-worker.sh --uninstall` stops the worker and removes all of it.
#
# What it installs, the first found of:
#   --from SOURCE (or XWCH_SOURCE=SOURCE): a clone of XWCH, a wheel, or a wheel's http(s) URL;
#   the clone this script sits in (run from a checkout);
#   the one xwch-*.whl beside this script (`make dist` puts the script beside the wheel).
# XWCH is not published on a package index: with none of these it stops before doing anything.
# Piped into sh (`curl -fsSL .../install-worker.sh | sh -s -- --from URL ...`) only --from works.
#
# Variables: XWCH_HOME; XWCH_VENV, the virtualenv (default $XWCH_HOME/venv); PYTHON, the
# interpreter to make it with (default python3, 3.11 or later). Exit status 2: nothing usable
# to install from, or a wrong argument; 1: the installation itself failed (pip says why above).
set -eu

PROGRAM=install-worker.sh
XWCH_HOME=${XWCH_HOME:-$HOME/.xwch}
VENV=${XWCH_VENV:-$XWCH_HOME/venv}
PYTHON=${PYTHON:-python3}
export XWCH_HOME

fail() {  # fail STATUS MESSAGE: one line on standard error, nothing left half done
    echo "$PROGRAM: $2" >&2
    exit "$1"
}

if [ "${1:-}" = "--uninstall" ]; then
    if [ -x "$VENV/bin/xwch-worker" ]; then
        "$VENV/bin/xwch-worker" uninstall
    fi
    rm -rf "$VENV"
    rmdir "$XWCH_HOME" 2>/dev/null || true
    echo "removed $VENV"
    exit 0
fi

# --from SOURCE is this script's; every other argument goes to `xwch-worker install`, in order.
source=${XWCH_SOURCE:-}
given_coordinator=${XWCH_COORDINATOR:-}
given_token=${XWCH_TOKEN:-}
count=$#
while [ "$count" -gt 0 ]; do
    arg=$1
    shift
    count=$((count - 1))
    case $arg in
        --from)
            [ "$count" -gt 0 ] || fail 2 "--from needs a SOURCE: a clone of XWCH, a wheel or a wheel's URL"
            source=$1
            shift
            count=$((count - 1))
            continue
            ;;
        --from=*) source=${arg#--from=}; continue ;;
        --coordinator | --coordinator=*) given_coordinator=yes ;;
        --token | --token=*) given_token=yes ;;
    esac
    set -- "$@" "$arg"
done

# The settings `xwch-worker install` needs, checked before anything is made: a worker.toml
# already there may give them (an installation being redone).
if [ ! -f "$XWCH_HOME/worker.toml" ]; then
    [ -n "$given_coordinator" ] || fail 2 "no coordinator: give --coordinator URL (or set XWCH_COORDINATOR)"
    [ -n "$given_token" ] || fail 2 "no token: give --token WORKER_TOKEN (or set XWCH_TOKEN)"
fi

here=
case $0 in
    */*) here=$(cd "$(dirname "$0")" 2>/dev/null && pwd) || here= ;;
    *) [ -f "$0" ] && here=$(pwd) ;;
esac

if [ -z "$source" ] && [ -n "$here" ]; then
    if [ -f "$here/pyproject.toml" ] && [ -d "$here/worker" ]; then
        source=$here
    else
        wheels=$(find "$here" -maxdepth 1 -name 'xwch-*.whl' 2>/dev/null)
        case $wheels in
            "") ;;
            *"
"*) fail 2 "several xwch wheels beside this script ($here): say which with --from WHEEL" ;;
            *) source=$wheels ;;
        esac
    fi
fi
if [ -z "$source" ]; then
    fail 2 "nothing to install from: XWCH is on no package index; run this script from a clone of XWCH or beside an xwch wheel (make dist), or give --from CLONE|WHEEL|URL"
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    fail 2 "the worker needs Python 3.11 or later: $PYTHON is not (set PYTHON=...)"
fi

case $source in
    http://* | https://*)
        # Reached now, not after a virtualenv is made: a wrong URL is told at once.
        "$PYTHON" - "$source" <<'EOF' || exit 2
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=30)
except Exception as e:
    sys.exit(f"install-worker.sh: cannot reach {sys.argv[1]}: {e}")
EOF
        ;;
    *)
        if [ -d "$source" ]; then
            [ -f "$source/pyproject.toml" ] && [ -d "$source/worker" ] ||
                fail 2 "--from $source: not a clone of XWCH (no pyproject.toml and worker/ there)"
            source=$(cd "$source" && pwd)
        elif [ -f "$source" ]; then
            case $source in
                *.whl) source=$(cd "$(dirname "$source")" && pwd)/$(basename "$source") ;;
                *) fail 2 "--from $source: not a wheel (.whl) nor a clone of XWCH" ;;
            esac
        else
            fail 2 "--from $source: no such file or folder"
        fi
        ;;
esac

echo "$PROGRAM: installing XWCH from $source into $VENV" >&2
made_venv=
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || fail 1 "cannot make a virtualenv in $VENV with $PYTHON"
    made_venv=yes
fi
if ! "$VENV/bin/python" -m pip install --quiet "$source"; then
    # A virtualenv made for nothing is removed; one that was there keeps what it had.
    [ -z "$made_venv" ] || rm -rf "$VENV"
    fail 1 "pip could not install XWCH from $source (its reason is above)"
fi
exec "$VENV/bin/xwch-worker" install "$@"
