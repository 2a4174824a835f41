// A static server for www/dist on 127.0.0.1 with the site's strict Content-Security-Policy as a header
// (so the worker, which a <meta> CSP does not cover, runs under it too) and the right MIME types
// (application/wasm lets the browser compile while downloading).
// Usage: node www/serve.mjs [--dir www/dist] [--port 8080]; also imported by the end-to-end test.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".json": "application/json", ".wasm": "application/wasm", ".svg": "image/svg+xml",
  ".ts": "text/plain; charset=utf-8", ".safetensors": "application/octet-stream", ".gguf": "application/octet-stream",
};

/** Serves `dir` on 127.0.0.1:`port` (0: any free port). Resolves to {url, close}. */
export function serve(dir, port = 0) {
  const root = path.resolve(dir);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    let rel = decodeURIComponent(url.pathname);
    if (rel.endsWith("/")) rel += "index.html";
    const file = path.resolve(root, `.${rel}`);
    const send = (code, body, type = "text/plain; charset=utf-8") => {
      res.writeHead(code, { "Content-Type": type, "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache" });
      res.end(body);
    };
    // Nothing outside the site, whatever the path says.
    if (file !== root && !file.startsWith(root + path.sep)) return send(403, "forbidden");
    fs.readFile(file, (err, body) => {
      if (err) return send(404, `not found: ${rel}`);
      send(200, body, TYPES[path.extname(file)] ?? "application/octet-stream");
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      const { port: p } = server.address();
      resolve({ url: `http://127.0.0.1:${p}/`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const get = (n, d) => (args.includes(n) ? args[args.indexOf(n) + 1] : d);
  const dir = get("--dir", path.join(path.dirname(fileURLToPath(import.meta.url)), "dist"));
  if (!fs.existsSync(path.join(dir, "index.html"))) {
    console.error(`${dir}/index.html is missing: build the site first (scripts/build-web)`);
    process.exit(1);
  }
  const { url } = await serve(dir, Number(get("--port", 8080)));
  console.log(`serving ${dir} at ${url} (Ctrl-C stops)`);
}
