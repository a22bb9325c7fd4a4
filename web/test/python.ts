// Runs one of the Python interop scripts in web/test/ against the repo's src/ and talks
// JSON lines to it: one request, one reply, in order.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..");
const repoSrc = resolve(web, "..", "src");

export type Json = Record<string, unknown>;

export class PythonPeer {
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly #waiting: Array<(line: string) => void> = [];
  #stderr = "";

  constructor(script: string) {
    const python = resolve(web, process.env.BANGOR_PYTHON ?? "../.venv/bin/python");
    this.#proc = spawn(python, [join(here, script)], {
      env: { ...process.env, PYTHONPATH: repoSrc },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.#proc.stderr.on("data", (d: Buffer) => (this.#stderr += d.toString()));
    createInterface({ input: this.#proc.stdout }).on("line", (line) => this.#waiting.shift()?.(line));
    this.#proc.on("exit", (code) => {
      for (const w of this.#waiting.splice(0)) w(JSON.stringify({ error: `python exited ${code}: ${this.#stderr}` }));
    });
  }

  /** Sends one request; resolves with the reply; rejects if Python reported an error. */
  async call(request: Json): Promise<Json> {
    const reply = await this.#raw(request);
    if (typeof reply.error === "string") throw new Error(`python: ${reply.error}`);
    return reply;
  }

  /** Like call, but an error reply is returned, not thrown. */
  async #raw(request: Json): Promise<Json> {
    const line = await new Promise<string>((res) => {
      this.#waiting.push(res);
      this.#proc.stdin.write(JSON.stringify(request) + "\n");
    });
    return JSON.parse(line) as Json;
  }

  async tryCall(request: Json): Promise<Json> {
    return this.#raw(request);
  }

  close(): void {
    this.#proc.stdin.end();
  }
}
