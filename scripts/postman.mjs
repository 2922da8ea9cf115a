// Builds the Postman collection from the OpenAPI document: every operation as
// openapi-to-postmanv2 converts it, one folder per service, and a "Purchase"
// folder that runs the scenario of clients/postman/purchase.mjs through those
// same requests. `make protos` runs it after scripts/openapi.py.
//
//     node scripts/postman.mjs gen/openapi.json gen/postman/ticketing.postman_collection.json
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

import Converter from "openapi-to-postmanv2";

import { steps } from "../clients/postman/purchase.mjs";

const [source, target] = process.argv.slice(2);

const converted = await promisify(Converter.convert)(
  { type: "string", data: fs.readFileSync(source, "utf8") },
  {
    folderStrategy: "Tags",
    // Optional query parameters stay out of the requests until a user wants one.
    enableOptionalParameters: false,
  },
);
if (!converted.result) throw new Error(`openapi-to-postmanv2: ${converted.reason}`);
const collection = converted.output[0].data;

// "POST /v1/bookings/{booking_id}:cancel" for a converted request, whichever
// way the converter wrote its path variables (":booking_id" or "{{booking_id}}").
function label(request) {
  const segments = request.url.path.map((part) =>
    part.replace(/^:(\w+)/, "{$1}").replace(/\{\{(\w+)\}\}/g, "{$1}"),
  );
  return `${request.method} /${segments.join("/")}`;
}

const byLabel = new Map();
(function index(items) {
  for (const item of items) {
    if (item.item) index(item.item);
    else byLabel.set(label(item.request), item);
  }
})(collection.item);

function script(type, source) {
  return { listen: type, script: { type: "text/javascript", exec: source.split("\n") } };
}

function scenarioStep(step) {
  const generated = byLabel.get(step.request);
  if (!generated) throw new Error(`no request ${step.request} in the OpenAPI document`);
  const request = structuredClone(generated.request);
  // Path variables take the ids earlier steps kept.
  for (const variable of request.url.variable ?? []) variable.value = `{{${variable.key}}}`;
  request.auth = step.token
    ? { type: "bearer", bearer: [{ key: "token", value: `{{${step.token}}}`, type: "string" }] }
    : { type: "noauth" };
  if (step.body) {
    request.body = { mode: "raw", raw: JSON.stringify(step.body, null, 2), options: { raw: { language: "json" } } };
  }
  const event = [script("test", step.test)];
  if (step.prerequest) event.unshift(script("prerequest", step.prerequest));
  return { name: step.name, request, event };
}

collection.item.push({
  name: "Purchase",
  description: "Register, sign in, create an event as the admin, book, read, cancel (clients/postman/purchase.mjs).",
  item: steps.map(scenarioStep),
});
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.writeFileSync(target, JSON.stringify(collection, null, 2) + "\n");
