#!/usr/bin/env python3
# A stand-in for Claude Code that uses abo's in-attempt MCP server the way Claude Code does: it
# starts the server named by `--mcp-config` and speaks MCP (JSON-RPC over stdio) to it. It writes
# a broken answer, calls `check`, fixes the answer, calls `check` again, and calls it once more
# past `mcp.max_checks`; it also knocks on its proxy's door without the token and with the token
# of the previous attempt. Every answer goes to $FAKE_AGENT_LOG/<task>.checks.json, or inside
# the sandbox (which passes no such variable and lets it write the worktree only) to
# checks-<task>.json in the change.
import json, os, socket, subprocess, sys

if "--version" in sys.argv:
    print("2.1.300 (Claude Code)")
    sys.exit(0)

print(json.dumps({"type": "system", "subtype": "init", "model": "claude-sonnet-4-5-20250929"}), flush=True)
log = os.environ.get("FAKE_AGENT_LOG")
task = os.environ["ABO_TASK_ID"]
args = sys.argv[1:]
config = json.load(open(args[args.index("--mcp-config") + 1]))
server = config["mcpServers"]["abo"]
assert "mcp__abo__check" in args[args.index("--allowedTools") + 1]
env = dict(os.environ, **server.get("env", {}))
proc = subprocess.Popen([server["command"]] + server["args"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, env=env, text=True)
next_id = [0]

def rpc(method, params=None, notify=False):
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if not notify:
        next_id[0] += 1
        msg["id"] = next_id[0]
    proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()
    if notify:
        return None
    while True:
        reply = json.loads(proc.stdout.readline())
        if reply.get("id") == msg["id"]:
            return reply

def knock(token):
    """POST /check at the proxy with `token` (None: no header); the HTTP status."""
    host, port = env["ABO_CHECK_PROXY"].removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    head = "POST http://abo-check.invalid/check HTTP/1.1\r\nHost: abo-check.invalid\r\n"
    if token is not None:
        head += "x-abo-check-token: " + token + "\r\n"
    s.sendall((head + "Content-Length: 0\r\nConnection: close\r\n\r\n").encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return int(data.split(b" ")[1])

out = {}
out["init"] = rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "fake-claude", "version": "0"}})
rpc("notifications/initialized", notify=True)
out["tools"] = rpc("tools/list", {})
open("answer.txt", "w").write("broken\n")
out["first"] = rpc("tools/call", {"name": "check", "arguments": {}})
open("answer.txt", "w").write("fixed\n")
open("done-" + task + ".txt", "w").write(task + "\n")
out["second"] = rpc("tools/call", {"name": "check", "arguments": {}})
out["third"] = rpc("tools/call", {"name": "check", "arguments": {}})
out["no_token"] = knock(None)
out["wrong_token"] = knock("0" * 64)
if log:
    previous = os.path.join(log, "token")
    if os.path.exists(previous):
        out["previous_attempts_token"] = knock(open(previous).read())
    open(previous, "w").write(env["ABO_CHECK_TOKEN"])
proc.stdin.close()
proc.wait(timeout=10)
json.dump(out, open(os.path.join(log, task + ".checks.json") if log else "checks-" + task + ".json", "w"))
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 3,
                  "result": "Fixed the answer after abo's check.", "session_id": "s1",
                  "total_cost_usd": 0.01,
                  "usage": {"input_tokens": 10, "output_tokens": 20}}))
