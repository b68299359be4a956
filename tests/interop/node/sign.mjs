// Signs a request with the reference implementation (npm `web-bot-auth`) and prints the
// headers it produced as JSON.
//
// stdin: {"method", "url", "headers": {name: value}, "jwk": private Ed25519 JWK,
//         "created", "expires" (unix seconds), "signature_agent" (the exact
//         Signature-Agent header value to send, optional), "label" (optional, default "sig1"),
//         "components" (optional; strings, or {"name", "parameters": {k: v}} objects;
//         default: the package's own choice, "@authority" plus "signature-agent" when the
//         header is sent), "nonce" (optional, base64 of 64 bytes; default: the package's)}
// stdout: {"Signature-Agent"?, "Signature-Input", "Signature"}
import { signatureHeaders } from "web-bot-auth";
import { signerFromJWK } from "web-bot-auth/crypto";

const readStdin = async () => {
  let data = "";
  for await (const chunk of process.stdin) data += chunk;
  return JSON.parse(data);
};

const job = await readStdin();
const headers = { ...(job.headers ?? {}) };
if (job.signature_agent !== undefined && job.signature_agent !== null) {
  headers["Signature-Agent"] = job.signature_agent;
}
const message = { method: job.method ?? "GET", url: job.url, headers };
const components = job.components?.map((c) =>
  typeof c === "string" ? c : { name: c.name, parameters: new Map(Object.entries(c.parameters ?? {})) },
);
const params = {
  created: new Date(job.created * 1000),
  expires: new Date(job.expires * 1000),
  key: job.label ?? "sig1",
};
if (components) params.components = components;
if (job.nonce) params.nonce = job.nonce;

const signer = await signerFromJWK(job.jwk);
const out = await signatureHeaders(message, signer, params);
const result = {};
if (headers["Signature-Agent"] !== undefined) result["Signature-Agent"] = headers["Signature-Agent"];
result["Signature-Input"] = out["Signature-Input"];
result["Signature"] = out["Signature"];
process.stdout.write(JSON.stringify(result) + "\n");
