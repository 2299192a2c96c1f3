// The official `openai` npm package against the gateway (driven by tests/sdk/test_node_openai.py).
// Usage: node openai_client.cjs BASE_URL API_KEY MARKER
// Prints one JSON object with what each call returned; the Python test checks it.
// Installed by tests/run.sh (npm ci into target/sdk-node); found through NODE_PATH.
"use strict";

const OpenAI = require("openai");

async function main() {
  const [baseURL, apiKey, marker] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
  const out = {};

  const chat = await client.chat.completions.create({
    model: "mock-fast",
    messages: [{ role: "user", content: `hello ${marker}` }],
  });
  out.chat = { content: chat.choices[0].message.content, usage: chat.usage, model: chat.model };

  const stream = await client.chat.completions.create({
    model: "mock-fast",
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: `stream ${marker}` }],
  });
  const pieces = [];
  let streamUsage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length && chunk.choices[0].delta.content) pieces.push(chunk.choices[0].delta.content);
    if (chunk.usage) streamUsage = chunk.usage;
  }
  out.stream = { pieces, usage: streamUsage };

  const emb = await client.embeddings.create({ model: "mock-embed", input: ["a", "b"] });
  out.embeddings = emb.data.map((d) => d.embedding.length);

  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);

  try {
    await new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 }).models.list();
    out.error = null;
  } catch (e) {
    out.error = { status: e.status, type: e.type, code: e.code, isAuth: e instanceof OpenAI.AuthenticationError };
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
