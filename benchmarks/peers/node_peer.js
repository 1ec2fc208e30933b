// Node's built-in http module serving the benchmark workload (see workload.py).
// Run: node benchmarks/peers/node_peer.js [port]; prints "node listening on http://HOST:PORT".
"use strict";
const http = require("http");

function chunkDict(i) {
  return {
    id: "chatcmpl-bench0001",
    object: "chat.completion.chunk",
    created: 1700000000,
    model: "bench",
    system_fingerprint: null,
    choices: [{ index: 0, delta: { content: `token${i} ` }, logprobs: null, finish_reason: null }],
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function stream(req, res, q) {
  const n = parseInt(q.get("n") || "200", 10);
  const delay = parseFloat(q.get("delay") || "0") * 1000;
  const hold = parseFloat(q.get("hold") || "0") * 1000;
  const hb = parseFloat(q.get("hb") || "15") * 1000;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
  });
  res.flushHeaders();  // send the head now, as the other peers do, even before the first event
  let closed = false;
  res.on("close", () => { closed = true; });
  const start = performance.now();
  for (let i = 0; i < n && !closed; i++) {
    // On a fixed schedule: lateness does not accumulate.
    if (delay && i) await sleep(Math.max(0, start + i * delay - performance.now()));
    if (!res.write("data: " + JSON.stringify(chunkDict(i)) + "\n\n")) {
      await new Promise((resolve) => { res.once("drain", resolve); res.once("close", resolve); });
    }
  }
  if (hold && !closed) {
    const timer = hb > 0 ? setInterval(() => res.write(":\n\n"), hb) : null;
    await sleep(hold);
    if (timer) clearInterval(timer);
  }
  if (!closed) res.end("data: [DONE]\n\n");
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/stream" && req.method === "POST") {
    req.resume();
    req.on("end", () => { stream(req, res, url.searchParams); });
  } else if (url.pathname === "/plain") {
    res.writeHead(200, { "content-type": "text/plain", "content-length": "13" });
    res.end("hello, world\n");
  } else if (url.pathname === "/chunked") {
    const size = parseInt(url.searchParams.get("size") || "4096", 10);
    let count = parseInt(url.searchParams.get("count") || "256", 10);
    const piece = Buffer.alloc(size, "x");
    res.writeHead(200, { "content-type": "application/octet-stream" });
    const pump = () => {
      while (count > 0) { count--; if (!res.write(piece)) { res.once("drain", pump); return; } }
      res.end();
    };
    pump();
  } else {
    res.writeHead(404, { "content-length": "0" });
    res.end();
  }
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.requestTimeout = 0;
server.maxHeadersCount = 100;
server.listen({ port: parseInt(process.argv[2] || "0", 10), host: "127.0.0.1", backlog: 4096 }, () => {
  console.log(`node listening on http://127.0.0.1:${server.address().port}`);
});
const stop = () => { server.close(); process.exit(0); };
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
