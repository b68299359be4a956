// Validates Kubernetes objects against the OpenAPI schemas that kubernetes-models compiles from
// the CRDs (Istio, Envoy Gateway, Gateway API) and from Kubernetes itself.
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, schema, error}, one per
// object, where `schema` is the model that validated it (null when there is none for its
// apiVersion and kind) and `error` is null when the object is valid.
// These schemas check types, enums, patterns and required fields; like the API server's
// structural schemas, they do not refuse unknown fields.

import { readFileSync } from "node:fs";

const PACKAGES = {
  "extensions.istio.io": "@kubernetes-models/istio",
  "networking.istio.io": "@kubernetes-models/istio",
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
};

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const pkg = PACKAGES[group] ?? "kubernetes-models";
  const path = PACKAGES[group] ? `${pkg}/${group}/${version}/${kind}` : `${pkg}/${group ? `${group}/` : ""}${version}/${kind}`;
  try {
    const mod = await import(path);
    return mod[kind] ? { Model: mod[kind], path } : null;
  } catch (e) {
    if (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return null;
    throw e;
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const found = await model(obj.apiVersion ?? "", obj.kind ?? "");
  const result = { kind: obj.kind, name: obj.metadata?.name ?? null, schema: found?.path ?? null, error: null };
  if (!found) {
    result.error = `no schema for ${obj.apiVersion} ${obj.kind}`;
  } else {
    try {
      new found.Model(obj).validate();
    } catch (e) {
      result.error = e.message;
    }
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
