// The v2 messages of the examples: a ModelInferRequest with raw contents and a
// response's outputs as JSON (field names as in the .proto: keepCase).
import { outputJson, toLittleEndian } from "../lib/float32.js";

export function inferRequest(model, version, input) {
  return {
    model_name: model,
    model_version: version,
    inputs: [{ name: "input", datatype: "FP32", shape: input.shape }],
    raw_input_contents: [Buffer.from(toLittleEndian(input.values))],
    // v2 parameter: 1 = highest, 2 = normal, 3+ lower; 0 or absent = the default.
    parameters: { priority: { uint64_param: "2" } },
  };
}

// The outputs of a ModelInferResponse by name (raw contents, in the order of `outputs`).
export function outputsJson(response) {
  const outputs = {};
  response.outputs.forEach((out, i) => {
    outputs[out.name] = outputJson(out.datatype, out.shape, response.raw_output_contents[i]);
  });
  return outputs;
}
