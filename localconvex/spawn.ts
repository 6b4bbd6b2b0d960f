/** Starts a real localconvex (server.ts) on a free loopback port, for the vitest tests. */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";

export type Running = { url: string; process: ChildProcess };

export async function startLocalConvex(args: string[], env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "server.ts"), "--address", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (chunk) => {
      out += chunk;
      const m = /localconvex ready on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`localconvex exited with ${code}`)));
  });
  return { url, process: child };
}
