// /config.json: what the server tells the page about its WebTransport endpoint. It comes
// from the server the page came from, but is checked like any input from the network.

import { ConnectError } from "../wire/errors.ts";

export const CONFIG_PATH = "/config.json";
export const PROTOCOL = 1;
export const MAX_CERTIFICATE_HASHES = 4;

export interface PageConfig {
  protocol: number;
  port: number;
  path: string;
  /** SHA-256 of the WebTransport certificate (lowercase hex); empty: a CA-signed one. */
  certificateHashes: string[];
  accounts: boolean;
}

export function parseConfig(data: unknown): PageConfig {
  const bad = (why: string): never => {
    throw new ConnectError(`the server's ${CONFIG_PATH} is not usable: ${why}`);
  };
  if (typeof data !== "object" || data === null || Array.isArray(data)) return bad("not an object");
  const d = data as Record<string, unknown>;
  if (d.protocol !== PROTOCOL) return bad(`protocol ${String(d.protocol)}, this page speaks ${PROTOCOL}`);
  const wt = d.webtransport;
  if (typeof wt !== "object" || wt === null) return bad("no webtransport entry");
  const { port, path } = wt as Record<string, unknown>;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) return bad("bad port");
  if (typeof path !== "string" || !/^\/[A-Za-z0-9._~/-]{0,100}$/.test(path)) return bad("bad path");
  const hashes = d.certificate_hashes ?? [];
  if (!Array.isArray(hashes) || hashes.length > MAX_CERTIFICATE_HASHES) return bad("bad certificate_hashes");
  for (const h of hashes) {
    if (typeof h !== "string" || !/^[0-9a-f]{64}$/.test(h)) return bad("a certificate hash is not SHA-256 hex");
  }
  if (d.accounts !== undefined && typeof d.accounts !== "boolean") return bad("bad accounts");
  return { protocol: PROTOCOL, port, path, certificateHashes: hashes as string[], accounts: d.accounts === true };
}

export async function fetchConfig(): Promise<PageConfig> {
  let response: Response;
  try {
    response = await fetch(CONFIG_PATH, { cache: "no-store" });
  } catch (error) {
    throw new ConnectError(`cannot load ${CONFIG_PATH}: ${String(error)}`);
  }
  if (!response.ok) throw new ConnectError(`cannot load ${CONFIG_PATH}: HTTP ${response.status}`);
  let data: unknown;
  try {
    data = await response.json();
  } catch {
    throw new ConnectError(`the server's ${CONFIG_PATH} is not JSON`);
  }
  return parseConfig(data);
}
