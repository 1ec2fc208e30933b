// Node's http + cluster serving the held-stream scenario (see benchmarks/peers/held_app.py).
// Run: node benchmarks/peers/node_held.js PORT WORKERS; prints "node listening on http://...".
// POST /v1/chat/completions: an OpenAI-style stream that sends its first token and then holds;
// a ":\n" comment after 15 s without a write; while $RAWSSE_HELD_NOTICE_FILE exists, a
// " notice@T" token to every stream at each wall-clock multiple of 5 s; on SIGTERM every stream
// gets an error frame and the chunked terminator, then the worker exits.
"use strict";
const cluster = require("cluster");
const http = require("http");
const fs = require("fs");

const port = parseInt(process.argv[2] || "0", 10);
const workers = parseInt(process.argv[3] || "1", 10);
const HEARTBEAT_MS = 15000;
const NOTICE_EVERY_MS = 5000;
const trigger = process.env.RAWSSE_HELD_NOTICE_FILE || "";

if (cluster.isPrimary && workers > 1) {
  let listening = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("listening", (worker, address) => {
    if (++listening === workers) console.log(`node listening on http://127.0.0.1:${address.port}`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill("SIGTERM");
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  cluster.on("exit", () => {
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
} else {
  const streams = new Set();
  let seq = 0;
  const chunk = (s, delta, n) =>
    `id: ${n}\ndata: ` + JSON.stringify({
      id: s.id, object: "chat.completion.chunk", created: s.created, model: s.model,
      system_fingerprint: "fp_node", choices: [{ index: 0, delta, logprobs: null, finish_reason: null }],
    }) + "\n\n";
  const write = (s, text) => {
    s.res.write(text);
    s.timer.refresh();  // data pushes the heartbeat back, as rawsse's does
  };
  const server = http.createServer((req, res) => {
    if (req.method !== "POST" || !req.url.startsWith("/v1/chat/completions")) {
      res.writeHead(404, { "content-length": "0" });
      res.end();
      return;
    }
    const parts = [];
    req.on("data", (d) => parts.push(d));
    req.on("end", () => {
      let body;
      try { body = JSON.parse(Buffer.concat(parts).toString()); } catch (e) { body = {}; }
      res.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
      });
      const s = { res, id: `chatcmpl-node${process.pid}x${seq++}`, created: Math.floor(Date.now() / 1000),
                  model: body.model || "lorem", n: 0, timer: null };
      s.timer = setTimeout(function beat() { res.write(":\n"); s.timer = setTimeout(beat, HEARTBEAT_MS); }, HEARTBEAT_MS);
      streams.add(s);
      res.on("close", () => { clearTimeout(s.timer); streams.delete(s); });
      s.res.write(chunk(s, { role: "assistant", content: "" }, ++s.n) + chunk(s, { content: "Lorem" }, ++s.n));
    });
  });
  server.keepAliveTimeout = 60000;
  server.headersTimeout = 65000;
  server.requestTimeout = 0;
  server.listen({ port, host: "127.0.0.1", backlog: 4096 }, () => {
    if (workers <= 1) console.log(`node listening on http://127.0.0.1:${server.address().port}`);
  });
  const notice = () => {
    const due = Math.floor(Date.now() / NOTICE_EVERY_MS + 1) * NOTICE_EVERY_MS;
    setTimeout(() => {
      if (trigger && fs.existsSync(trigger)) {
        const text = ` notice@${(due / 1000).toFixed(3)}`;
        for (const s of streams) write(s, chunk(s, { content: text }, ++s.n));
      }
      notice();
    }, Math.max(0, due - Date.now()));
  };
  notice();
  process.on("SIGTERM", () => {
    server.close();
    const farewell = "data: " + JSON.stringify({ error: { message: "The server is shutting down.", type: "server_error", param: null, code: "server_shutdown" } }) + "\n\n";
    for (const s of streams) { clearTimeout(s.timer); s.res.end(farewell); }
    const exit = () => (streams.size === 0 ? process.exit(0) : setTimeout(exit, 50));
    exit();
  });
}
