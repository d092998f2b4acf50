"""A real MCP client (the official Python SDK, `mcp` on PyPI) for abo's integration tests.

    client.py stdio ABO_BIN ARGS...   starts `ABO_BIN ARGS...` and speaks MCP over its stdio
    client.py http URL [TOKEN]        speaks streamable HTTP to URL, with a bearer token if given

Reads a JSON list of steps on stdin and prints one JSON list of their results on stdout:
    {"op": "tools"}                          -> {"tools": [{"name", "input", "output"}...]}
    {"op": "call", "name": N, "args": {...}} -> {"is_error", "structured", "text"} or {"error"}
    {"op": "resources"}                      -> {"resources": [uri...]}
    {"op": "read", "uri": U}                 -> {"mime", "text"} or {"error"}
A protocol error (MCPError) is a result, {"error": message, "code": code}, not a failure.
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def step(session, s):
    try:
        if s["op"] == "tools":
            r = await session.list_tools()
            return {
                "tools": [
                    {"name": t.name, "input": t.input_schema, "output": t.output_schema}
                    for t in r.tools
                ]
            }
        if s["op"] == "call":
            r = await session.call_tool(s["name"], s.get("args", {}))
            text = "\n".join(c.text for c in r.content if getattr(c, "type", "") == "text")
            return {"is_error": bool(r.is_error), "structured": r.structured_content, "text": text}
        if s["op"] == "resources":
            r = await session.list_resources()
            return {"resources": [str(x.uri) for x in r.resources]}
        if s["op"] == "read":
            r = await session.read_resource(s["uri"])
            c = r.contents[0]
            return {"mime": c.mime_type, "text": c.text}
    except MCPError as e:
        return {"error": e.error.message, "code": e.error.code}
    raise ValueError(f"unknown step {s}")


async def run(streams, steps):
    read, write = streams
    async with ClientSession(read, write) as session:
        await session.initialize()
        return [await step(session, s) for s in steps]


async def main():
    steps = json.load(sys.stdin)
    mode = sys.argv[1]
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=sys.argv[3:])
        async with stdio_client(params) as streams:
            out = await run(streams, steps)
    else:
        headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as client:
            async with streamable_http_client(sys.argv[2], http_client=client) as streams:
                out = await run(streams, steps)
    print(json.dumps(out))


asyncio.run(main())
