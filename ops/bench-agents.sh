#!/usr/bin/env bash
# The per-attempt overhead abo adds to a real agent CLI (BENCHMARKS.md, "Real agent CLIs"): the
# pinned CLI against the scripted model server over https, N times each
#   direct:   the CLI run by hand in a fresh clone, with the arguments abo gives it (wall time);
#   off:      `abo run` with `sandbox.mode: off` (the attempt's backend duration_ms);
#   required: `abo run` with `sandbox.mode: required` (the same), its egress proxy and helper.
# Prints each sample and the medians. Usage: ops/bench-agents.sh [codex|aider]... (N=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-5}"
agents_dir="${ABO_AGENTS_DIR:-$HOME/.cache/abo-agents}"
pinned() { awk -v n="$1" '$1 == n { print $2 }' ops/agents.lock; }
cargo build -q -p abo -p abo-test-support --example openai_model_server
root="$PWD"
abo="$root/target/debug/abo"
work="$(mktemp -d)"
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$root/target/debug/examples/openai_model_server" https > "$work/server" &
server_pid=$!
for _ in $(seq 1 100); do [ -s "$work/server" ] && break; sleep 0.1; done
read -r url ca < "$work/server"
now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

repo() { # a fresh repository with the script's files and abo.yml for $1 (agent) and $2 (mode)
  local d="$work/repo-$RANDOM$RANDOM"
  mkdir -p "$d" && cd "$d"
  git init -q -b main && git config user.name b && git config user.email b@b.invalid
  printf 'hello\n' > edit.txt && printf 'bye\n' > doomed.txt
  printf 'version: 1\nattempts: { max: 1 }\nsandbox: { mode: %s, agent_hosts: [localhost], env_pass: [CODEX_CA_CERTIFICATE, SSL_CERT_FILE] }\nbackends:\n  agent: { kind: %s, model: %s, base_url: "%s" }\n' \
    "$2" "$1" "$3" "$url" > abo.yml
  git add -A && git commit -qm seed
  printf 'tasks:\n  - { id: t, title: "Create, edit, delete, run", backend: agent }\n' > "$work/b.yml"
  echo "$d"
}

for agent in "${@:-codex aider}"; do
  for a in $agent; do
    bin="$agents_dir/$a-$(pinned "$a")/bin"
    [ -x "$bin/$a" ] || { echo "$a is not installed in $bin: run .ci/install-agents" >&2; exit 1; }
    case "$a" in codex) model=gpt-5.5 ;; aider) model=openai/gpt-4.1 ;; esac
    export PATH="$bin:$PATH" OPENAI_API_KEY=bench CODEX_CA_CERTIFICATE="$ca" SSL_CERT_FILE="$ca"
    for mode in direct off required; do
      : > "$work/samples"
      for _ in $(seq 1 "$N"); do
        d="$(repo "$a" "${mode/direct/off}" "$model")"
        home="$work/home-$RANDOM$RANDOM"; mkdir -p "$home/.codex"
        if [ "$mode" = direct ]; then
          cd "$d"
          echo "Create created.txt, edit edit.txt, delete doomed.txt" > "$work/prompt.md"
          t0=$(now)
          case "$a" in
            codex) HOME="$home" CODEX_HOME="$home/.codex" codex exec --json -s workspace-write \
                -c 'model_provider="abo"' -c 'model_providers.abo.name="abo"' \
                -c "model_providers.abo.base_url=\"$url\"" -c 'model_providers.abo.wire_api="responses"' \
                -c 'model_providers.abo.env_key="OPENAI_API_KEY"' -m "$model" "$(cat "$work/prompt.md")" \
                < /dev/null > /dev/null 2>&1 ;;
            aider) HOME="$home" COLUMNS=1000 aider --message-file "$work/prompt.md" --yes-always \
                --no-auto-commits --no-pretty --no-check-update --no-show-release-notes \
                --no-show-model-warnings --no-analytics --analytics-log "$work/a.jsonl" --no-git \
                --no-gitignore --chat-history-file "$work/h.md" --input-history-file "$work/i" \
                --openai-api-base "$url" --model "$model" < /dev/null > /dev/null 2>&1 ;;
          esac
          echo $(( ($(now) - t0) / 1000000 )) >> "$work/samples"
        else
          run="$(HOME="$home" "$abo" -C "$d" run "$work/b.yml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["run"]["id"])')"
          HOME="$home" "$abo" -C "$d" events "$run" --json \
            | python3 -c 'import json,sys
for l in sys.stdin:
    e = json.loads(l)
    if e["kind"] == "task.backend_finished": print(e["data"]["duration_ms"])' >> "$work/samples"
        fi
        cd "$root"
      done
      echo "$a $mode: samples $(tr '\n' ' ' < "$work/samples")ms, median $(median < "$work/samples") ms"
    done
  done
done
