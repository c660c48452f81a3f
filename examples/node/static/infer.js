// The same ModelInfer as dynamic/infer.js through generated stubs: protoc-gen-es v2 messages
// (gen/, written by `npm run generate`) and a Connect client over the gRPC protocol
// (@connectrpc/connect-node). A bad request's error details are decoded with the generated
// google.rpc schemas. Prints one JSON object.
//
//   npm run generate && MAAS_TARGET=127.0.0.1:50051 node static/infer.js
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  GRPCInferenceService,
  ModelInferRequestSchema,
} from "../gen/maas/inference/grpc_service_pb.js";
import { exampleInput, outputJson, toLittleEndian } from "../lib/float32.js";
import { apiKey, target, timeoutMs } from "../lib/settings.js";

// Plaintext HTTP/2, as `maas up` serves; with TLS: baseUrl "https://..." (and
// nodeOptions: { ca } for a private CA).
const transport = createGrpcTransport({ baseUrl: `http://${target}` });
const client = createClient(GRPCInferenceService, transport);
const callOptions = {
  timeoutMs, // sent as grpc-timeout: the call's deadline
  headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
};

function inferRequest(model, input) {
  return create(ModelInferRequestSchema, {
    modelName: model,
    // int64 fields are bigint in protobuf-es.
    inputs: [{ name: "input", datatype: "FP32", shape: input.shape.map(BigInt) }],
    rawInputContents: [toLittleEndian(input.values)],
    parameters: { priority: { parameterChoice: { case: "uint64Param", value: 2n } } },
  });
}

// A ConnectError's code and the details the gateway put in google.rpc.Status.
function describeError(err) {
  const error = ConnectError.from(err);
  const [info] = error.findDetails(ErrorInfoSchema);
  const [badRequest] = error.findDetails(BadRequestSchema);
  return {
    code: error.code, // the gRPC code's number: Code.InvalidArgument === 3
    code_name: Code[error.code],
    message: error.rawMessage,
    reason: info?.reason,
    domain: info?.domain,
    field_violations: (badRequest?.fieldViolations ?? []).map(({ field, description }) => ({
      field,
      description,
    })),
  };
}

async function failure(request) {
  try {
    await client.modelInfer(request, callOptions);
  } catch (err) {
    return describeError(err);
  }
  throw new Error("the bad request succeeded");
}

async function main() {
  const input = exampleInput(3);
  const response = await client.modelInfer(inferRequest("mlp", input), callOptions);
  const outputs = {};
  response.outputs.forEach((out, i) => {
    outputs[out.name] = outputJson(out.datatype, out.shape, response.rawOutputContents[i]);
  });
  const wrongShape = await failure(inferRequest("mlp", exampleInput(3, 63))); // mlp takes 64
  console.log(JSON.stringify({
    model: response.modelName,
    version: response.modelVersion,
    input: { name: "input", shape: input.shape, data: Array.from(input.values) },
    outputs,
    errors: { wrong_shape: wrongShape },
  }));
}

await main();
