// ModelInfer on the demo model `mlp` (FP32 [N, 64] -> "output" [N, 10]) with raw contents,
// then two bad requests whose rich errors are decoded. Prints one JSON object.
//
//   MAAS_TARGET=127.0.0.1:50051 node dynamic/infer.js
import { exampleInput } from "../lib/float32.js";
import { call, close, describeError, inference } from "./client.js";
import { inferRequest, outputsJson } from "./v2.js";

async function failure(request) {
  try {
    await call(inference, "ModelInfer", request);
  } catch (err) {
    return describeError(err);
  }
  throw new Error("the bad request succeeded");
}

async function main() {
  const input = exampleInput(3);
  const response = await call(inference, "ModelInfer", inferRequest("mlp", "", input));
  const wrongShape = inferRequest("mlp", "", exampleInput(3, 63)); // mlp takes 64 columns
  const unknownModel = inferRequest("no-such-model", "", input);
  console.log(JSON.stringify({
    model: response.model_name,
    version: response.model_version,
    input: { name: "input", shape: input.shape, data: Array.from(input.values) },
    outputs: outputsJson(response),
    errors: { wrong_shape: await failure(wrongShape), unknown_model: await failure(unknownModel) },
  }));
}

main().finally(close);
