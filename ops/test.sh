#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts what the suites need (git, Python
# with venv, util-linux, Chromium and playwright-core for the dashboard, PostgreSQL for the shared
# store, Prometheus for the deploy tests, the agent CLIs pinned in ops/agents.lock), then `cargo test --workspace`. Extra arguments
# go to cargo test. Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need git || missing+=(git)
# The sandbox tests run Python scripts and `unshare` inside the sandbox.
need python3 || missing+=(python3)
# aider's virtual environment (.ci/install-agents).
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
need unshare || missing+=(util-linux)
# The dashboard's browser test: Chromium from Debian, driven by playwright-core from npm.
[ -x /usr/bin/chromium ] || missing+=(chromium)
need npm || missing+=(nodejs npm)
# The shared store's tests run against a real PostgreSQL server, through psql.
need psql || missing+=(postgresql-client)
[ -d /etc/postgresql ] || missing+=(postgresql)
# The deploy tests run a real Prometheus server (each test starts its own on a free port).
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# PostgreSQL on 127.0.0.1:5432 with trust auth for root; each test makes its own database.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
if ! psql -XAtq "postgres://root@127.0.0.1:5432/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
  # A fresh server: root may connect from 127.0.0.1 without a password, and create databases.
  v="$(ls /etc/postgresql | head -n1)"
  hba="/etc/postgresql/$v/main/pg_hba.conf"
  grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$v" main reload
  sql="$(mktemp)"; chmod 644 "$sql"
  echo "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END\$\$;" > "$sql"
  su postgres -c "psql -XAtq -f $sql"
fi
psql -XAtq "postgres://root@127.0.0.1:5432/postgres" -c 'SELECT 1' >/dev/null

# The MCP client of the `mcp` integration tests: the official Python SDK (`mcp` on PyPI), pinned,
# in a virtual environment of its own. Quick when already installed.
mcp_version=2.3.0
mcp_env=.ci/agents/mcp-python
if ! "$mcp_env/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$mcp_version')" 2>/dev/null; then
  rm -rf "$mcp_env"
  python3 -m venv "$mcp_env"
  "$mcp_env/bin/pip" install --quiet --disable-pip-version-check "mcp==$mcp_version"
fi
(cd crates/abo/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
# The real agent CLIs of ops/agents.lock, which the real_* integration tests run (python3.11 makes
# aider's virtual environment). Quick when already installed.
bash .ci/install-agents
# The mutation gate's test runs the real cargo-mutants (from crates.io; a few minutes to build once).
CARGO_MUTANTS_VERSION=27.1.0
if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $CARGO_MUTANTS_VERSION" ]; then
  cargo install --locked "cargo-mutants@$CARGO_MUTANTS_VERSION"
fi


cargo test --workspace "$@"
