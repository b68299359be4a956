// Verifies a request with the reference implementation (npm `web-bot-auth`).
//
// stdin: {"method", "url", "headers": {name: value}, "jwk": public Ed25519 JWK}
// stdout: {"ok": true} or {"ok": false, "error": "..."}; the exit status is 0 either way
// (non-zero only when the job itself cannot be read).
import { verify } from "web-bot-auth";
import { verifierFromJWK } from "web-bot-auth/crypto";

let data = "";
for await (const chunk of process.stdin) data += chunk;
const job = JSON.parse(data);
const message = { method: job.method ?? "GET", url: job.url, headers: job.headers ?? {} };

let result;
try {
  await verify(message, await verifierFromJWK(job.jwk));
  result = { ok: true };
} catch (e) {
  result = { ok: false, error: String(e?.message ?? e) };
}
process.stdout.write(JSON.stringify(result) + "\n");
