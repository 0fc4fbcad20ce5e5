// The e2e test's Node client: the published MCP TypeScript SDK against
// sandpool serve's /mcp. It lists the tools, runs Python and JavaScript
// with run_code, ends its session, and prints what it saw as one JSON line.
//
//   SANDPOOL_MCP_URL=http://127.0.0.1:7423/mcp SANDPOOL_API_KEY=spk_... node client.mjs
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = process.env.SANDPOOL_MCP_URL;
const key = process.env.SANDPOOL_API_KEY;
if (!url || !key) {
  console.error("set SANDPOOL_MCP_URL and SANDPOOL_API_KEY");
  process.exit(2);
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "sandpool-e2e-node", version: "1.0.0" });
await client.connect(transport);

const text = (result) => result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
const { tools } = await client.listTools();
const python = await client.callTool({
  name: "run_code",
  arguments: { language: "python", code: "import sys\nprint(6 * 7, sys.version_info[0])" },
});
const node = await client.callTool({
  name: "run_code",
  arguments: { language: "node", code: "console.log([1, 2, 3].map((x) => x * 2).join(','))" },
});

// Ending the session destroys its sandbox; the test checks that.
await transport.terminateSession();
await client.close();

console.log(JSON.stringify({
  tools: tools.map((t) => t.name).sort(),
  python: { isError: Boolean(python.isError), text: text(python), structured: python.structuredContent },
  node: { isError: Boolean(node.isError), text: text(node), structured: node.structuredContent },
}));
