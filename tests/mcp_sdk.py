"""The official MCP Python SDK (`pip install mcp`) as the client of `sudo-agent mcp`.

Run by tests/mcp.rs: argv is the agent command (with its emulator, if any), then the
agent's URL, the base32 secret, the TOTP step, the action the elicitation callback
takes ("accept" answers with the current code from pyotp, "decline", "cancel") and the
command to ask for. Prints
one JSON object: what the server negotiated, what the human was asked, the codes the
callback gave, and each tool result as the assistant would see it.
"""

import asyncio
import json
import sys

import mcp.types as types
import pyotp
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def field(obj, snake, camel):
    """SDK 2.x names fields in snake_case, 1.x as on the wire."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def shown(result):
    """A tool result as the model reads it."""
    text = "\n".join(c.text for c in result.content if c.type == "text")
    return {"isError": field(result, "is_error", "isError"), "text": text}


async def main(agent, url, secret, step, action, command):
    totp = pyotp.TOTP(secret, interval=step)
    asked, codes = [], []

    async def on_elicit(context, params):
        schema = field(params, "requested_schema", "requestedSchema")
        asked.append({"message": params.message, "schema": schema})
        if action != "accept":
            return types.ElicitResult(action=action)
        code = totp.now()
        codes.append(code)
        return types.ElicitResult(action="accept", content={"code": code})

    server = StdioServerParameters(
        command=agent[0],
        args=agent[1:] + ["mcp", "--url", url, "--config", "/nonexistent/config.json"],
    )
    results = []
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, elicitation_callback=on_elicit) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool(
                "run_command",
                {"command": command, "reason": "the test asks"},
            )
            results.append(shown(result))
            if action == "cancel":
                # Left held: the assistant can follow it.
                held = json.loads(results[0]["text"])
                status = await session.call_tool("job_status", {"id": held["id"], "wait_s": 0})
                results.append(shown(status))
    description = next(t.description for t in tools.tools if t.name == "run_command")
    print(json.dumps({
        "protocolVersion": field(init, "protocol_version", "protocolVersion"),
        "description": description,
        "asked": asked,
        "codes": codes,
        "results": results,
    }))


if __name__ == "__main__":
    *agent, url, secret, step, action, command = sys.argv[1:]
    asyncio.run(main(agent, url, secret, int(step), action, command))
