#!/bin/sh
# Installs the XWCH volunteer worker for the current user, in one line:
#
#   curl -fsSL https://example.org/install-worker.sh | sh -s -- \
#       --coordinator http://coord:8750 --token WORKER_TOKEN [--idle-minutes 5 ...]
#
# or, from a checkout:  ./install-worker.sh --coordinator URL --token T [PREFERENCES]
#
# It makes a virtualenv in $XWCH_HOME/venv (XWCH_HOME defaults to ~/.xwch), installs XWCH in it,
# then runs `xwch-worker install` with the arguments given (`xwch-worker install --help` lists
# the preferences). `install-worker.sh --uninstall` stops the worker and removes all of it.
#
# Variables: XWCH_SOURCE, what pip installs (default: this checkout when run from one, else the
# package "xwch"); PYTHON, the interpreter to make the virtualenv with (default python3).
set -eu

XWCH_HOME=${XWCH_HOME:-$HOME/.xwch}
VENV=${XWCH_VENV:-$XWCH_HOME/venv}
PYTHON=${PYTHON:-python3}
export XWCH_HOME

if [ "${1:-}" = "--uninstall" ]; then
    if [ -x "$VENV/bin/xwch-worker" ]; then
        "$VENV/bin/xwch-worker" uninstall
    fi
    rm -rf "$VENV"
    rmdir "$XWCH_HOME" 2>/dev/null || true
    echo "removed $VENV"
    exit 0
fi

if [ -z "${XWCH_SOURCE:-}" ]; then
    here=$(cd "$(dirname "$0")" 2>/dev/null && pwd) || here=
    if [ -n "$here" ] && [ -f "$here/pyproject.toml" ] && [ -d "$here/worker" ]; then
        XWCH_SOURCE=$here
    else
        XWCH_SOURCE=xwch
    fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install-worker.sh: the worker needs Python 3.11 or later (set PYTHON=...)" >&2
    exit 2
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$XWCH_SOURCE"
exec "$VENV/bin/xwch-worker" install "$@"
