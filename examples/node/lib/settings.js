// What every example reads from the environment, with the names the Python SDK uses.
export const target = process.env.MAAS_TARGET || "127.0.0.1:50051";
// Sent as `authorization: Bearer <key>` when set (needed when the gateway runs MAAS_AUTH=on).
export const apiKey = process.env.MAAS_API_KEY || "";
// Every call gets a deadline: a call the cluster cannot answer fails instead of hanging.
export const timeoutMs = Number(process.env.MAAS_TIMEOUT_MS || 30000);
