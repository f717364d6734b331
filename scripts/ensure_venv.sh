#!/usr/bin/env bash
# Make ./.venv point at a virtual environment holding requirements.txt + requirements-dev.txt.
#
# Environments are cached outside the checkout under ~/.cache/fhavatar/venvs/<hash of the requirement
# files>, so a fresh clone (CI) with unchanged requirements reuses one in seconds, while a fresh machine
# builds it from nothing. The project itself is not installed into the shared environment (it would pin
# one checkout's path); the Makefile puts the checkout on PYTHONPATH instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
hash=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
cache_root="${FHAVATAR_VENV_CACHE:-$HOME/.cache/fhavatar/venvs}"
target="$cache_root/$hash"

if [ -d .venv ] && [ ! -L .venv ]; then
  # A hand-made .venv: keep it, install into it once per requirements hash.
  if [ ! -f ".venv/.fhavatar-req-$hash" ]; then
    .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
    touch ".venv/.fhavatar-req-$hash"
  fi
  exit 0
fi

if [ ! -f "$target/.complete" ]; then
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock-$hash"
  flock 9
  if [ ! -f "$target/.complete" ]; then
    echo "Creating the environment for requirements $hash in $target (first time only: a few minutes)..."
    # venv scripts embed their folder, so build in place; `.complete` marks a finished build.
    rm -rf "$target"
    "$PYTHON" -m venv "$target"
    "$target/bin/python" -m pip install -q --upgrade pip
    "$target/bin/python" -m pip install -q -r requirements.txt -r requirements-dev.txt
    touch "$target/.complete"
  fi
fi
ln -sfn "$target" .venv
