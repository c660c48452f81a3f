// A tiny training job through maas.v1 TrainingService: create it, watch its events to the
// end, then ModelInfer on the model version it made. Progress goes to stderr; one JSON
// object to stdout.
//
//   MAAS_TARGET=127.0.0.1:50051 node dynamic/train.js [model_name]
import { exampleInput } from "../lib/float32.js";
import { timeoutMs } from "../lib/settings.js";
import { call, close, inference, metadata, training } from "./client.js";
import { inferRequest, outputsJson } from "./v2.js";

// The cheapest real job: `mlp` on the built-in 8x8 `digits` for 5 steps.
const spec = {
  model_name: process.argv[2] || "node-digits-mlp",
  architecture: "mlp",
  dataset: "digits",
  optimizer: "adam",
  lr: 0.003, // proto3 `optional` fields: set means set, even to the default
  batch_size: 32,
  epochs: 1,
  max_steps: "5", // int64: a string (longs: String), or a number below 2^53
  seed: "0",
};

// Every event of the job until the stream ends (after the terminal state).
function watch(jobId) {
  return new Promise((resolve, reject) => {
    const events = [];
    const stream = training.WatchTrainingJob(
      { job_id: jobId, after_sequence: "0" }, metadata(), { deadline: Date.now() + 10 * timeoutMs });
    stream.on("data", ({ event }) => {
      events.push(event);
      const what = event.event; // the oneof's case: state, progress, epoch, checkpoint, ...
      console.error(`[${event.sequence}] ${what}: ${JSON.stringify(event[what])}`);
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(events));
  });
}

async function main() {
  const { job } = await call(training, "CreateTrainingJob", { spec });
  console.error(`job ${job.job_id}: ${job.state}`);
  const events = await watch(job.job_id);
  const { job: done } = await call(training, "GetTrainingJob", { job_id: job.job_id });
  if (done.state !== "SUCCEEDED") throw new Error(`job ${done.job_id} ${done.state}: ${done.error}`);
  const [model, version] = done.model_version.split(":");
  const input = exampleInput(3);
  const response = await call(inference, "ModelInfer", inferRequest(model, version, input));
  console.log(JSON.stringify({
    job_id: done.job_id,
    state: done.state,
    model_version: done.model_version,
    states: events.filter((e) => e.event === "state").map((e) => e.state),
    events: events.length,
    input: { name: "input", shape: input.shape, data: Array.from(input.values) },
    outputs: outputsJson(response),
  }));
}

main().finally(close);
