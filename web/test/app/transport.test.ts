// The WebTransport shell with a fake WebTransport (node has the web streams): what the
// page is told when the session fails or closes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../src/app/config.ts";
import { Transport } from "../../src/app/transport.ts";
import { ConnectError } from "../../src/wire/errors.ts";

const config = parseConfig({ protocol: 1, webtransport: { port: 7601, path: "/bangor/1" }, accounts: false });

interface Fake {
  ready: Promise<void>;
  closed: Promise<{ closeCode: number; reason: string }>;
  failReady(error: Error): void;
  close(info: { closeCode: number; reason: string }): void;
  breakStream(error: Error): void;
  controlBytes(data: Uint8Array): void;
  endStream(): void;
}

function install(): { made: Fake[] } {
  const made: Fake[] = [];
  (globalThis as Record<string, unknown>).WebTransport = class implements Fake {
    ready: Promise<void>;
    closed: Promise<{ closeCode: number; reason: string }>;
    private readyCtl!: { resolve: () => void; reject: (e: Error) => void };
    private closedCtl!: { resolve: (i: { closeCode: number; reason: string }) => void; reject: (e: Error) => void };
    private stream!: ReadableStreamDefaultController<Uint8Array>;
    datagrams = {
      readable: new ReadableStream<Uint8Array>(),
      writable: new WritableStream<Uint8Array>(),
      maxDatagramSize: 1211,
    };
    constructor() {
      this.ready = new Promise((resolve, reject) => (this.readyCtl = { resolve, reject }));
      this.closed = new Promise((resolve, reject) => (this.closedCtl = { resolve, reject }));
      made.push(this);
      queueMicrotask(() => this.readyCtl.resolve());
    }
    failReady(error: Error): void {
      this.readyCtl.reject(error);
      this.closedCtl.reject(error);
    }
    close(info?: { closeCode: number; reason: string }): void {
      this.closedCtl.resolve(info ?? { closeCode: 0, reason: "" });
    }
    breakStream(error: Error): void {
      this.stream.error(error);
    }
    controlBytes(data: Uint8Array): void {
      this.stream.enqueue(data);
    }
    endStream(): void {
      this.stream.close();
    }
    async createBidirectionalStream() {
      return {
        readable: new ReadableStream<Uint8Array>({ start: (c) => void (this.stream = c) }),
        writable: new WritableStream<Uint8Array>(),
      };
    }
  };
  return { made };
}

test("a session that fails to open: a sentence, and no unhandled rejection", async (t) => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  t.after(() => {
    process.off("unhandledRejection", onUnhandled);
    delete (globalThis as Record<string, unknown>).WebTransport;
  });
  const { made } = install();
  const connecting = Transport.connect(config, "example.org");
  made[0]!.failReady(new Error("Opening handshake failed."));
  await assert.rejects(connecting, (e: unknown) => e instanceof ConnectError && /Opening handshake failed/.test(e.message));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(unhandled, []);
});

test("the session closing in a call says the server's reason, not a broken stream", async (t) => {
  t.after(() => delete (globalThis as Record<string, unknown>).WebTransport);
  const { made } = install();
  const transport = await Transport.connect(config, "example.org");
  const told: string[] = [];
  let eof = false;
  transport.onControl = (data) => void (data === null && (eof = true));
  transport.onClose = (reason) => told.push(reason);
  // The browser fails the stream's read first, then the session's close comes.
  made[0]!.breakStream(new Error("WebTransportError: The session is closed."));
  await new Promise((r) => setTimeout(r, 5));
  made[0]!.close({ closeCode: 0, reason: "the server is shutting down" });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(eof, false, "a broken stream is not a clean end of the server's bytes");
  assert.deepEqual(told, ["server closed the session: the server is shutting down"]);
});

test("the session's end waits for the control bytes before it, which say why", async (t) => {
  t.after(() => delete (globalThis as Record<string, unknown>).WebTransport);
  const { made } = install();
  const transport = await Transport.connect(config, "example.org");
  const seen: string[] = [];
  transport.onControl = (data) => void seen.push(data === null ? "eof" : `bytes ${data.length}`);
  transport.onClose = (reason) => seen.push(reason);
  // The server ended the control stream and the session together; the browser told the
  // page of the session's end before it had read the stream's last bytes (the goodbye).
  made[0]!.close({ closeCode: 0, reason: "" });
  await new Promise((r) => setTimeout(r, 5));
  made[0]!.controlBytes(new Uint8Array(40));
  made[0]!.endStream();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(seen, ["bytes 40", "eof", "server closed the session"]);
});
