#!/usr/bin/env bash
# A longer kill -9 campaign than CI's 20 trials: ops/chaos.sh [TRIALS] [SEED]
# Runs of a small backlog killed at random moments (abo alone or its whole session, resumes
# killed again), then checked for lost tasks, duplicates, gaps in the event log, stuck runs and
# internal errors; prints the figures and fails unless all are zero.
set -euo pipefail
cd "$(dirname "$0")/.."
export ABO_CHAOS_TRIALS="${1:-100}"
export ABO_CHAOS_SEED="${2:-$(date +%s)}"
exec cargo test -p abo --test it -- crash::campaign --nocapture
