// A gRPC-Web call the way a browser makes one: fetch() and the gRPC-Web
// framing, with messages encoded from protos/ by @grpc/proto-loader.
//   EDGE=http://localhost:8080 node clients/grpc-web/list-events.mjs
import path from "node:path";
import { fileURLToPath } from "node:url";

import protoLoader from "@grpc/proto-loader";

const protoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../protos");
const edge = process.env.EDGE ?? "http://localhost:8080";
const services = protoLoader.loadSync(["ticketing/event/v1/event.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true });
const EventService = services["ticketing.event.v1.EventService"];

async function grpcWeb(method, request) {
  const message = method.requestSerialize(request);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1); // flag 0: a data frame
  const reply = await fetch(edge + method.path, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
    body: Buffer.concat([header, message]),
  });
  let body = Buffer.from(await reply.arrayBuffer());
  let response;
  let trailers = "";
  while (body.length) {
    const size = body.readUInt32BE(1);
    const payload = body.subarray(5, 5 + size);
    if (body[0] & 0x80) trailers = payload.toString();
    else response = method.responseDeserialize(payload);
    body = body.subarray(5 + size);
  }
  const status = reply.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(trailers)?.[1];
  if (status !== "0") throw new Error(`grpc-status ${status}: ${trailers}`);
  return response;
}

const { events } = await grpcWeb(EventService.ListEvents, { page_size: 5 });
console.log(JSON.stringify(events.map((e) => ({ event_id: e.event_id, title: e.title }))));
