#!/usr/bin/env bash
# Prints the path of a working CPython X.Y interpreter (PATH first, then pyenv's versions).
# Usage: scripts/find-python.sh 3.9
set -u
v="$1"
if command -v "python$v" >/dev/null 2>&1 && "python$v" -c '' >/dev/null 2>&1; then
  command -v "python$v"; exit 0
fi
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" /usr/bin/"python$v" /usr/local/bin/"python$v"; do
  if [ -x "$p" ] && "$p" -c '' >/dev/null 2>&1; then echo "$p"; exit 0; fi
done
echo "no working python$v found" >&2
exit 1
