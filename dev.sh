#!/usr/bin/env bash
# gwproxy developer entry point. Two commands matter (see README):
#   ./dev.sh example   install everything, run the gateway on config/gateway.example.yaml
#   ./dev.sh test      install everything (Python packages and the Debian servers the tests
#                      use), build the Cython core, and run the whole test suite
# Other sub-commands: install, bench (side-by-side benchmark against nginx).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${GWPROXY_VENV:-.venv}
PY="$VENV/bin/python"

need_apt() {  # install Debian packages whose command is missing: need_apt cmd:pkg ...
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

install() {  # $1: pip extras ("" or "[test]")
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --upgrade pip >/dev/null
  "$PY" -m pip install -q -e ".$1"
  # build the Cython extensions next to their sources so the tree imports them
  "$PY" setup.py -q build_ext --inplace >/dev/null
  "$VENV/bin/gwproxy" version
}

case "${1:-}" in
  install)
    install "[test]" ;;
  example)
    install ""
    exec "$VENV/bin/gwproxy" serve -c config/gateway.example.yaml ;;
  test)
    need_apt redis-server:redis-server ip:iproute2 nginx:nginx wrk:wrk systemd-analyze:systemd
    install "[test]"
    shift
    exec "$PY" -m pytest "$@" ;;
  bench)
    need_apt nginx:nginx wrk:wrk
    install "[test]"
    shift
    exec "$PY" loadtests/compare.py "$@" ;;
  *)
    echo "usage: ./dev.sh example|test|install|bench" >&2; exit 2 ;;
esac
