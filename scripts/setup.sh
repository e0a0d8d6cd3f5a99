#!/usr/bin/env bash
# Creates .venv/ and installs rad3d with its test tools. Idempotent: a second run is quick.
# Usage: bash scripts/setup.sh [--system]
#   Installs WordNet from Debian's packages where missing (METEOR, for the leaderboard); --system also
#   installs the Debian packages the tests use. Needs root or sudo only when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"rad3d needs Python 3.11+, found {sys.version}"'

# Debian packages: WordNet 3.0 for METEOR (the leaderboard) always; with --system also what the
# tests use: PostgreSQL (production instance), Redis (Celery broker), Chromium (the UI test).
# Installed only where missing.
want=(wordnet-base wordnet-sense-index)
if [ "${1:-}" = "--system" ]; then
  want+=(redis-server chromium)
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
fi
pkgs=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$pkg")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${pkgs[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.rad3d-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: this takes the CPU build; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev,production]"
  # The clinical metrics' packages without their declared deps (medspacy/PyRuSH pin spacy<3.8 on Python 3.11).
  .venv/bin/python -m pip install -q --no-deps $(.venv/bin/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["clinical"]))')
  # medspacy-quickumls and radgraph install a top-level `tests` package; the project's own is tests/.
  rm -rf .venv/lib/python3*/site-packages/tests
  touch "$stamp"
fi
# WordNet for NLTK's METEOR, copied from Debian's packages into .venv/nltk_data (offline).
.venv/bin/python -m rad3d_pipeline.evaluation.text_metrics.wordnet_setup >/dev/null
echo "setup: .venv ready ($(.venv/bin/python --version))"
