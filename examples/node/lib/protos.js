// Where the .proto files are: the repo's include root `protos/` (maas/inference: the KServe
// v2 contract, package `inference`; maas/v1: the maas services) and the google/rpc protos
// (status, error details) of the npm package google-proto-files.
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

// MAAS_PROTOS: another copy of protos/ (e.g. when this folder is copied out of the repo).
export const protoRoot = resolve(process.env.MAAS_PROTOS || join(here, "..", "..", "..", "protos"));
export const googleRoot = join(here, "..", "node_modules", "google-proto-files");
export const V2_PROTO = "maas/inference/grpc_service.proto";
