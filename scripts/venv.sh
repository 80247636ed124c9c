#!/usr/bin/env bash
# Creates .venv with Python Celery pinned (interop/requirements.txt) from
# PyPI. Rebuilt only when the requirements change. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."

req=interop/requirements.txt
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	echo "$PWD/$venv/bin/python"
	exit 0
fi
echo "venv: creating $venv from $req" >&2
python3 -m venv "$venv" >&2 || {
	# Debian splits venv's ensurepip out.
	apt-get install -y -qq python3-venv >&2 && python3 -m venv "$venv" >&2
}
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
echo "$want" >"$stamp"
echo "$PWD/$venv/bin/python"
