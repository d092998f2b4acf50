//! Fake agent CLIs: shell scripts named like the real tools that print each tool's documented
//! output, edit a file, and misbehave when the task id says so: `*silent*` prints nothing,
//! `*hang*` hangs after its result, `*leakkey*` writes its key base64-encoded into its
//! change, `*echokey*` prints its keys
//! into its transcript and stderr, `*hostile*` runs the Python script `$HOSTILE_SCRIPT` and
//! writes what it printed into its change, `*error*` reports an error and exits 0, `*garbage*` prints no
//! JSON, `*crash*` exits 3, `*overloaded*` fails as an overloaded provider, `*limited*` (claude) hits
//! its usage limit the first time (its reset `$FAKE_LIMIT_RESET_SECS`, default 2, seconds ahead) and
//! works after, `*spendy*` (claude)
//! streams messages using 1,000 tokens each for two seconds; `*refused*` connects through its
//! proxy to `$REFUSE_TARGET` (`host:port`) every 0.1 s, as Claude Code retries a refused proxy
//! connection, up to 300 times, counting its tries in `TOOL-TASK.tries` in its worktree, and goes
//! on once it is let through (else fails); `*keyprobe*` sends `POST $KEY_UPSTREAM` through
//! `$HTTP_PROXY` with `x-api-key: $ANTHROPIC_API_KEY` and writes the answer and its key,
//! endpoint, CA and proxy variables into its change (a sandboxed agent cannot write to `$FAKE_AGENT_LOG`); `FAKE_AGENT_COST` sets
//! the USD claude reports. Each appends `TOOL TASK ATTEMPT` to `$FAKE_AGENT_LOG/calls` and records its
//! arguments, environment and stdin in `$FAKE_AGENT_LOG/<tool>-<task>-<attempt>.{args,env,stdin}`.

use std::path::{Path, PathBuf};

const COMMON: &str = r#"#!/bin/sh
[ "$1" = "--version" ] && { echo "$TOOL 9.9.9 (fake)"; exit 0; }
log="${FAKE_AGENT_LOG:-/tmp}/$TOOL-$ABO_TASK_ID-$ABO_ATTEMPT"

for a in "$@"; do printf '%s\n' "$a"; done > "$log.args"
env > "$log.env"
readlink /proc/$$/fd/0 > "$log.stdin"
echo "$TOOL $ABO_TASK_ID $ABO_ATTEMPT" >> "${FAKE_AGENT_LOG:-/tmp}/calls"
edit() { echo "edited by $TOOL for $ABO_TASK_ID" > "$TOOL-$ABO_TASK_ID.txt"; }
# `*netprobe*`: what the agent can reach, written into its change: a direct connection to
# $PROBE_PORT on the host's loopback, the same through the proxy abo gives it, and its proxy.
probe() {
  python3 - "$PROBE_PORT" > "$TOOL-$ABO_TASK_ID.txt" 2>&1 <<'PY'
import os, socket, sys
port = int(sys.argv[1])
try:
    socket.create_connection(("127.0.0.1", port), 2).close()
    print("direct: connected")
except OSError as e:
    print("direct: refused", type(e).__name__)
proxy = os.environ.get("HTTPS_PROXY", "")
print("proxy:", "set" if proxy.startswith("http://127.0.0.1:") else "unset")
if proxy:
    host, p = proxy[len("http://"):].split(":")
    s = socket.create_connection((host, int(p)), 2)
    s.sendall(("CONNECT localhost:%d HTTP/1.1\r\n\r\n" % port).encode())
    print("via proxy:", s.recv(100).decode().splitlines()[0])
    s2 = socket.create_connection((host, int(p)), 2)
    s2.sendall(b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
    print("metadata via proxy:", s2.recv(100).decode().splitlines()[0])
PY
}
refused() {
  python3 - "$TOOL-$ABO_TASK_ID.tries" <<'PY' || { echo "$TOOL: connection refused by the proxy, giving up" >&2; exit 1; }
import os, socket, sys, time
host, p = os.environ["HTTPS_PROXY"][len("http://"):].split(":")
target = os.environ["REFUSE_TARGET"]
for i in range(300):
    open(sys.argv[1], "w").write(str(i + 1))
    s = socket.create_connection((host, int(p)), 2)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    if s.recv(100).decode().startswith("HTTP/1.1 200"):
        sys.exit(0)
    s.close()
    time.sleep(0.1)
sys.exit(1)
PY
}
keyprobe() {
  python3 - > "$TOOL-$ABO_TASK_ID.txt" 2>&1 <<'PY'
import os, urllib.request
req = urllib.request.Request(os.environ["KEY_UPSTREAM"], data=b"{}", method="POST",
                             headers={"x-api-key": os.environ.get("ANTHROPIC_API_KEY", "")})
print(urllib.request.urlopen(req, timeout=5).read().decode())
PY
  env | grep -E '^(ANTHROPIC_|OPENAI_|CLAUDE_|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|REQUESTS_CA_BUNDLE|CODEX_CA_CERTIFICATE|HTTPS?_PROXY)' >> "$TOOL-$ABO_TASK_ID.txt"
}
case "$ABO_TASK_ID" in
  *netprobe*) probe; edit() { :; } ;;
  *refused*) refused ;;
  *keyprobe*) keyprobe; edit() { :; } ;;
  *hostile*) python3 "$HOSTILE_SCRIPT" > "$TOOL-$ABO_TASK_ID.txt" 2>&1; edit() { :; } ;;
  *leakkey*) printf 'key = "%s"\n' "$(printf %s "$ANTHROPIC_API_KEY" | base64 -w0)" > "$TOOL-$ABO_TASK_ID.txt"; edit() { :; } ;;
  *echokey*) echo "my keys: $ANTHROPIC_API_KEY $OPENAI_API_KEY $CLAUDE_CODE_OAUTH_TOKEN" >&2 ;;
  *silent*) sleep 30; exit 0 ;;
  *crash*) echo "$TOOL: segmentation fault" >&2; exit 3 ;;
  *garbage*) echo "this is not json"; echo '{"type": "result", broken'; edit; exit 0 ;;
esac
"#;

const CLAUDE: &str = r#"
edit
echo '{"type":"system","subtype":"init","model":"claude-sonnet-4-5-20250929","cwd":"'"$PWD"'","tools":["Edit","Bash"]}'
echo '{"type":"assistant","message":{"model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Editing the file."}]}}'
case "$ABO_TASK_ID" in
  *echokey*) echo '{"type":"assistant","message":{"model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"My key is '"$ANTHROPIC_API_KEY"' and my login '"$CLAUDE_CODE_OAUTH_TOKEN"'."}]}}' ;;
esac
case "$ABO_TASK_ID" in
  *spendy*) for i in 1 2 3 4 5 6 7 8 9 10; do
      echo '{"type":"assistant","message":{"model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Thinking hard."}],"usage":{"input_tokens":10,"output_tokens":990}}}'
      sleep 0.2
    done ;;
esac
cost="${FAKE_AGENT_COST:-0.0421}"
case "$ABO_TASK_ID" in
  *error*) echo '{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":5,"total_cost_usd":0.5,"usage":{"input_tokens":100,"output_tokens":10,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}'; exit 0 ;;
  *overloaded*) echo '{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}","total_cost_usd":0}'; exit 1 ;;
  *limited*) marker="${FAKE_AGENT_LOG:-/tmp}/limited-$ABO_TASK_ID"
    if [ ! -e "$marker" ]; then
      : > "$marker"
      reset=$(( $(date +%s) + ${FAKE_LIMIT_RESET_SECS:-2} ))
      echo '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":'"$reset"',"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false},"session_id":"s1"}'
      echo '{"type":"result","subtype":"success","is_error":true,"duration_ms":310,"num_turns":1,"result":"Claude AI usage limit reached|'"$reset"'","session_id":"s1","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0}}'
      exit 1
    fi ;;
esac
echo '{"type":"result","subtype":"success","is_error":false,"duration_ms":1200,"num_turns":2,"result":"Added the file the task asked for.","session_id":"s1","total_cost_usd":'"$cost"',"usage":{"input_tokens":12,"cache_creation_input_tokens":900,"cache_read_input_tokens":15000,"output_tokens":300},"modelUsage":{"claude-sonnet-4-5-20250929":{"inputTokens":12,"outputTokens":300,"cacheReadInputTokens":15000,"cacheCreationInputTokens":900,"costUSD":'"$cost"'}}}'
case "$ABO_TASK_ID" in *hang*) sleep 30 ;; esac
exit 0
"#;

const CODEX: &str = r#"
edit
echo '{"type":"thread.started","thread_id":"th_1"}'
echo '{"type":"turn.started"}'
echo '{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","status":"completed"}}'
case "$ABO_TASK_ID" in
  *error*) echo '{"type":"turn.failed","error":{"message":"model refused the request"}}'; exit 0 ;;
esac
echo '{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"Done: the file is in place."}}'
echo '{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122,"reasoning_output_tokens":64}}'
case "$ABO_TASK_ID" in *hang*) sleep 30 ;; esac
exit 0
"#;

const AIDER: &str = r#"
# The analytics log path follows --analytics-log.
analytics=""
prev=""
for a in "$@"; do [ "$prev" = "--analytics-log" ] && analytics="$a"; prev="$a"; done
edit
echo "Applied edit to $TOOL-$ABO_TASK_ID.txt"
echo "Tokens: 4.2k sent, 150 received. Cost: \$0.01 message, \$0.01 session."
case "$ABO_TASK_ID" in *no-analytics*) exit 0 ;; esac
echo '{"event":"launched","properties":{},"time":1}' > "$analytics"
echo '{"event":"message_send","properties":{"main_model":"gpt-4.1","edit_format":"diff","prompt_tokens":4200,"completion_tokens":150,"total_tokens":4350,"cost":0.0096,"total_cost":0.0096},"time":2}' >> "$analytics"
exit 0
"#;

const GOOSE: &str = r#"
edit
echo "starting session | provider: anthropic model: claude-sonnet-4-5"
echo '{"type":"message","message":{"role":"assistant","created":0,"content":[{"type":"text","text":"I wrote the file."}]}}'
case "$ABO_TASK_ID" in
  *error*) echo '{"type":"error","error":"provider error: rate limit exceeded"}'; exit 1 ;;
esac
echo '{"type":"complete","total_tokens":4210}'
exit 0
"#;

/// Writes `claude`, `codex`, `aider` and `goose` into `dir/bin` and returns that directory.
pub fn install(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("claude", CLAUDE),
        ("codex", CODEX),
        ("aider", AIDER),
        ("goose", GOOSE),
    ] {
        let path = bin.join(name);
        // TOOL is set before the common part runs.
        let script = format!(
            "#!/bin/sh\nTOOL={name}\n{}{body}",
            COMMON.trim_start_matches("#!/bin/sh\n")
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}
