// maas through @grpc/grpc-js with the protos loaded at run time by @grpc/proto-loader: no
// generated code. Error details (google.rpc.Status in the `grpc-status-details-bin`
// trailer) are decoded with protobufjs from the google/rpc protos of google-proto-files.
import { join } from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

import { googleRoot, protoRoot, V2_PROTO } from "../lib/protos.js";
import { apiKey, target, timeoutMs } from "../lib/settings.js";

const definition = protoLoader.loadSync([V2_PROTO, "maas/v1/training_service.proto"], {
  includeDirs: [protoRoot, googleRoot],
  keepCase: true, // field names as in the .proto: model_name, raw_input_contents
  longs: String, // int64/uint64 as decimal strings: a JS number is exact only to 2^53
  enums: String, // enum values by name: "SUCCEEDED"
  defaults: true,
  oneofs: true, // a oneof's set field is named by its own property: event.event === "state"
});
const loaded = grpc.loadPackageDefinition(definition);

// Plaintext, as `maas up` serves; with TLS: grpc.credentials.createSsl(caPem).
const credentials = grpc.credentials.createInsecure();
export const inference = new loaded.inference.GRPCInferenceService(target, credentials);
export const training = new loaded.maas.v1.TrainingService(target, credentials);

export function metadata() {
  const md = new grpc.Metadata();
  if (apiKey) md.set("authorization", `Bearer ${apiKey}`);
  return md;
}

export function options() {
  return { deadline: Date.now() + timeoutMs };
}

// One unary call as a promise.
export function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), options(), (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, file) => join(googleRoot, file);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = rpcRoot.lookupType("google.rpc.Status");

// A failed call's status with its details decoded: the ErrorInfo reason (stable, e.g.
// MODEL_NOT_FOUND) and the BadRequest field violations.
export function describeError(err) {
  const described = { code: err.code, code_name: grpc.status[err.code], message: err.details };
  const [bin] = err.metadata?.get("grpc-status-details-bin") ?? [];
  if (!bin) return described;
  const status = Status.decode(bin);
  for (const any of status.details) {
    const type = rpcRoot.lookup(any.type_url.slice(any.type_url.lastIndexOf("/") + 1));
    if (!(type instanceof protobuf.Type)) continue; // a detail type not in google/rpc
    const detail = type.toObject(type.decode(any.value));
    if (type.name === "ErrorInfo") {
      described.reason = detail.reason;
      described.domain = detail.domain;
    } else if (type.name === "BadRequest") {
      described.field_violations = detail.fieldViolations ?? [];
    } else {
      described[type.name] = detail;
    }
  }
  return described;
}

export function close() {
  inference.close();
  training.close();
}
