// The WebTransport shell: one session to the server's endpoint, the first bidirectional
// stream carrying the control channel's bytes (as TCP would), datagrams carrying media
// packets (as UDP would). No protocol here: bytes in, bytes out.

import { fromHex } from "../wire/bytes.ts";
import { ConnectError } from "../wire/errors.ts";
import type { PageConfig } from "./config.ts";

export const CONNECT_TIMEOUT_MS = 5000; // ClientSettings.connect_timeout
/** A control stream that broke waits this long for the session's close to say why. */
export const CLOSE_REASON_WAIT_MS = 1000;

export function endpointUrl(config: PageConfig, hostname: string): string {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname; // an IPv6 literal
  return `https://${host}:${config.port}${config.path}`;
}

export class Transport {
  private readonly wt: WebTransport;
  private readonly control: WritableStreamDefaultWriter<Uint8Array>;
  private readonly datagrams: WritableStreamDefaultWriter<Uint8Array>;
  private closedFlag = false;
  private sessionEnded = false;
  /** Control-channel bytes as they arrive (null: the stream ended). */
  onControl: (data: Uint8Array | null) => void = () => {};
  onDatagram: (data: Uint8Array) => void = () => {};
  /** The session is over (reason for the user). */
  onClose: (reason: string) => void = () => {};
  datagramsSent = 0;
  datagramsReceived = 0;
  /** Packets over maxDatagramSize: not sent (the sender should never make one). */
  oversize = 0;

  private constructor(
    wt: WebTransport,
    control: WritableStreamDefaultWriter<Uint8Array>,
    datagrams: WritableStreamDefaultWriter<Uint8Array>,
  ) {
    this.wt = wt;
    this.control = control;
    this.datagrams = datagrams;
  }

  static async connect(config: PageConfig, hostname: string): Promise<Transport> {
    if (typeof WebTransport === "undefined") {
      throw new ConnectError("this browser has no WebTransport (use a current Chrome, Edge or Firefox)");
    }
    const url = endpointUrl(config, hostname);
    const options: WebTransportOptions = {};
    if (config.certificateHashes.length) {
      options.serverCertificateHashes = config.certificateHashes.map((h) => ({
        algorithm: "sha-256",
        value: fromHex(h) as Uint8Array<ArrayBuffer>,
      }));
    }
    let wt: WebTransport;
    try {
      wt = new WebTransport(url, options);
    } catch (error) {
      throw new ConnectError(`cannot open WebTransport to ${url}: ${String(error)}`);
    }
    // A session that fails to open rejects `closed` too: handled here, or each failed
    // join leaves an unhandled rejection (the reasons are read below).
    wt.closed.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ConnectError(`cannot reach ${url}: timed out`)), CONNECT_TIMEOUT_MS);
    });
    try {
      await Promise.race([wt.ready, timeout]);
      const stream = await Promise.race([wt.createBidirectionalStream(), timeout]);
      const transport = new Transport(wt, stream.writable.getWriter(), wt.datagrams.writable.getWriter());
      const reading = transport.readControl(stream.readable);
      transport.readDatagrams(wt.datagrams.readable);
      wt.closed.then(
        (info) =>
          transport.sessionClosed(
            reading,
            info.reason ? `server closed the session: ${info.reason}` : "server closed the session",
          ),
        (error: unknown) => transport.sessionClosed(reading, `lost the connection to the server: ${describe(error)}`),
      );
      return transport;
    } catch (error) {
      try {
        wt.close();
      } catch {
        // already failed
      }
      if (error instanceof ConnectError) throw error;
      throw new ConnectError(`cannot reach ${url}: ${describe(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  get maxDatagramSize(): number {
    return this.wt.datagrams.maxDatagramSize;
  }

  private async readControl(readable: ReadableStream<Uint8Array>): Promise<void> {
    const reader = readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (value.length) this.onControl(value);
      }
    } catch (error) {
      // The stream broke with the session (or was reset): the session's close says why
      // (the server's reason, a timeout), not "the server closed the connection".
      await Promise.race([this.wt.closed.catch(() => {}), delay(CLOSE_REASON_WAIT_MS)]);
      if (!this.sessionEnded) this.closed(`lost the control stream: ${describe(error)}`);
      return;
    }
    if (!this.closedFlag) this.onControl(null);
  }

  /** The session ended. The control bytes before its end (the server's goodbye says
   * why) may still be on their way to us: read them first, for a moment at most. */
  private async sessionClosed(reading: Promise<void>, reason: string): Promise<void> {
    this.sessionEnded = true;
    await Promise.race([reading, delay(CLOSE_REASON_WAIT_MS)]);
    this.closed(reason);
  }

  private async readDatagrams(readable: ReadableStream<Uint8Array>): Promise<void> {
    const reader = readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        this.datagramsReceived += 1;
        this.onDatagram(value);
      }
    } catch {
      // the session ended
    }
  }

  sendControl(data: Uint8Array): void {
    if (this.closedFlag || !data.length) return;
    this.control.write(data).catch((error: unknown) => this.closed(`lost the control stream: ${describe(error)}`));
  }

  sendDatagram(data: Uint8Array): void {
    if (this.closedFlag) return;
    if (data.length > this.maxDatagramSize) {
      this.oversize += 1;
      return;
    }
    this.datagramsSent += 1;
    // Datagrams are unreliable anyway: one the browser could not queue is a lost packet.
    this.datagrams.write(data).catch(() => {});
  }

  private closed(reason: string): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.onClose(reason);
  }

  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.control.close().catch(() => {});
    try {
      this.wt.close({ closeCode: 0, reason: "bye" });
    } catch {
      // already closed
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
