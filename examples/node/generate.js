// Writes the stubs of the static example into gen/ (`npm run generate`): protoc-gen-es over
// the repo's protos (maas/inference: the v2 contract; maas/v1: the maas services) and over
// google/rpc status and error details from the google-proto-files package.
//
// `--config '{"version":"v2"}'` builds protos/ without its buf.yaml, whose lint settings
// exclude the v2 contract: generation needs every file. MAAS_PROTOS overrides the include
// root (a copy of protos/ outside this repository).
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { protoRoot } from "./lib/protos.js";

const here = dirname(fileURLToPath(import.meta.url));
const googleRoot = join(here, "node_modules", "google-proto-files");
const buf = join(here, "node_modules", ".bin", "buf");
const env = { ...process.env, PATH: `${join(here, "node_modules", ".bin")}:${process.env.PATH}` };

function generate(input, paths, extra = []) {
  const args = ["generate", input, "--template", join(here, "buf.gen.yaml"), ...extra];
  for (const path of paths) args.push("--path", join(input, path));
  execFileSync(buf, args, { cwd: here, env, stdio: "inherit" });
}

rmSync(join(here, "gen"), { recursive: true, force: true });
generate(protoRoot, ["maas/inference", "maas/v1"], ["--config", '{"version":"v2"}']);
generate(googleRoot, ["google/rpc/status.proto", "google/rpc/error_details.proto"]);
