// Validates KEDA resources against KEDA's CRD schemas (@kubernetes-models/keda, installed by
// scripts/install-chart-tools into <tools>/keda). Reads a JSON list of Kubernetes objects on
// stdin; prints a JSON list of {kind, name, errors} for the KEDA ones; exit 1 when any fails.
//   node validate.mjs <tools>/keda/node_modules < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node validate.mjs NODE_MODULES_DIR < objects.json");
  process.exit(2);
}
const base = join(modules, "@kubernetes-models", "keda", "keda.sh", "v1alpha1");
const kinds = {};
for (const kind of ["ScaledObject", "ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication"]) {
  kinds[kind] = (await import(pathToFileURL(join(base, `${kind}.js`)).href))[kind];
}

const objects = JSON.parse(readFileSync(0, "utf-8"));
const results = [];
for (const obj of objects) {
  if (obj?.apiVersion !== "keda.sh/v1alpha1") continue;
  const Model = kinds[obj.kind];
  const result = { kind: obj.kind, name: obj.metadata?.name ?? null, errors: [] };
  if (!Model) {
    result.errors.push(`no schema for kind ${obj.kind}`);
  } else {
    try {
      new Model(obj).validate();
    } catch (err) {
      const details = (err.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}`);
      result.errors.push(...(details.length ? details : [String(err.message ?? err)]));
    }
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
process.exit(results.some((r) => r.errors.length) ? 1 : 0);
