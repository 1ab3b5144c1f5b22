#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs what it needs
# (npm packages; Chromium for the browser tests; PostgreSQL for the tests of
# the PostgreSQL engine, which run on a throwaway cluster of their own), then
# runs the Rust unit and integration tests, the integration suite once more on
# PostgreSQL, and the JavaScript tests (the real @supabase/realtime-js and
# @supabase/supabase-js clients and a headless Chromium) against the real
# binary, the supabase-js tests on both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental caches; they only take disk.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check, cargo clippy"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo build"
cargo build --locked --bins

echo "== throwaway PostgreSQL"
# shellcheck source=scripts/throwaway-postgres.sh
source scripts/throwaway-postgres.sh
trap stop_throwaway_postgres EXIT
# An interrupted run still stops the cluster (bash runs the EXIT trap on exit).
trap 'exit 130' INT TERM
start_throwaway_postgres

echo "== cargo test"
started=$SECONDS
cargo test --locked -- --test-threads=2
echo "== sqlite suite: $((SECONDS - started)) s"

# The integration suite again, every server on PostgreSQL (a schema of its
# own per test on the throwaway cluster); the tests about SQLite itself skip.
echo "== cargo test --test api on PostgreSQL"
started=$SECONDS
SYNCGATE_TEST_ENGINE=postgres cargo test --locked --test api -- --test-threads=2
echo "== postgres suite: $((SECONDS - started)) s"
# The cluster stays up for the JavaScript tests: the supabase-js tests run
# once more on PostgreSQL, on an empty database of their own.
"$throwaway_pg_bin/psql" -X "$SYNCGATE_TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qc 'CREATE DATABASE syncgate_js'
export SYNCGATE_JS_DATABASE_URL="${SYNCGATE_TEST_DATABASE_URL%/*}/syncgate_js"

if [ -d static/tests ] || grep -q chromium tests/js/package.json 2>/dev/null; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (browser tests)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

echo "== javascript tests"
cd tests/js
npm ci --no-audit --no-fund
SYNCGATE_BIN="$(cd ../.. && pwd)/target/debug/syncgate" npm test
cd ../..
stop_throwaway_postgres
