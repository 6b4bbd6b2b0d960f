/**
 * localconvex — a TEST DOUBLE of a Convex deployment, for development, demos and tests.
 *
 * It is NOT a second implementation of the queue: it serves Convex's HTTP API
 * (POST /api/query, /api/mutation, /api/action) and routes every call into the real
 * functions in convex/ and the components its convex.config.ts installs, executed
 * by convex-test's in-memory engine. All queue semantics live in the queue
 * component; this file only does HTTP, who-is-calling (the admin key, an
 * unverified test identity), function lookup and (optionally) snapshots of the
 * database to a file.
 *
 *   tsx localconvex/server.ts [--address HOST:PORT] [--state FILE] [--functions DIR] [--time-limit-ms MS]
 *
 * Every execution is held to Convex's limits and accounted (usage.ts).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { convexTest } from "convex-test";
import { defineSchema, defineTable, makeFunctionReference, type SchemaDefinition, type UserIdentity } from "convex/server";
import { convexToJson, jsonToConvex, type Value } from "convex/values";
import { Clock, type Kind, type Outcome, SyncServer } from "./sync.js";
import { DEFAULT_TIME_LIMIT_MS, instrumentModule, resetUsage, setTimeLimit, usageReport } from "./usage.js";
import { toEnvelopeJson, toWireJson } from "./wire.js";

const USAGE = "usage: tsx localconvex/server.ts [--address HOST:PORT] [--state FILE] [--functions DIR] [--time-limit-ms MS]";
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Extra table that only localconvex adds to the schema; see restore(). */
const GAPS_TABLE = "localconvexGaps";
/** convex-test's first document id counter (its ids are "<zero-padded counter><table>"). */
const FIRST_ID_COUNTER = 10000;

type Tester = ReturnType<typeof convexTest>;
type Doc = Record<string, any>;
/** One component's database ("" is the app's). */
type Part = { nextIdCounter: number; tables: Record<string, Doc[]>; scheduled: Doc[] };
/** ts: the deployment's last timestamp (sync protocol), which must only grow. */
type Snapshot = { version: 2; components: Record<string, Part>; ts?: bigint };
/** A database to snapshot: its component path and its tables. */
type Store = { path: string; tables: string[] };
/** Who calls: nobody in particular, the holder of the admin key, or a (test) user identity. */
type Caller = { admin: boolean; identity?: Partial<UserIdentity> };

class Fatal extends Error {}

// ---------------------------------------------------------------------------- CLI

function parseCli(argv: string[]) {
  const opts = {
    host: "127.0.0.1",
    port: 3210,
    stateFile: null as string | null,
    functionsDir: path.join(REPO_ROOT, "convex"),
    timeLimitMs: DEFAULT_TIME_LIMIT_MS,
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2) as [string, string | undefined];
    if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    if (!["--address", "--state", "--functions", "--time-limit-ms"].includes(flag)) throw new Fatal(`unknown argument ${JSON.stringify(argv[i])}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Fatal(`${flag} needs a value`);
      value = argv[++i];
    }
    if (flag === "--address") {
      const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
      if (!m || Number(m[2]) > 65535) throw new Fatal(`--address must be HOST:PORT, got ${JSON.stringify(value)}`);
      opts.host = m[1].replace(/^\[|\]$/g, "");
      opts.port = Number(m[2]);
    } else if (flag === "--state") {
      if (!value) throw new Fatal("--state needs a file name");
      opts.stateFile = path.resolve(value);
    } else if (flag === "--time-limit-ms") {
      if (!/^[1-9]\d*$/.test(value)) throw new Fatal(`--time-limit-ms must be a positive integer, got ${JSON.stringify(value)}`);
      opts.timeLimitMs = Number(value);
    } else {
      opts.functionsDir = path.resolve(value);
    }
  }
  return opts;
}

// ---------------------------------------------------------------------------- functions

/**
 * The modules map convexTest wants (normally built by vite's import.meta.glob):
 * "./jobs.ts" -> () => import(".../jobs.ts"). convex-test takes the part of the
 * "_generated" key before "_generated" ("./") as the root, so udf path "jobs"
 * maps to "./jobs". Also returns the same loaders keyed by module path ("jobs"). Each module's
 * functions are instrumented (usage.ts) under their name, prefixed with `prefix` (a component's).
 */
function loadModules(dir: string, prefix = "") {
  const glob: Record<string, () => Promise<any>> = {};
  const byModule = new Map<string, () => Promise<any>>();
  const walk = (sub: string) => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
      if (entry.isDirectory()) walk(rel);
      else if (/\.(ts|js)$/.test(rel) && !/\.(test|spec)\.[jt]s$|\.d\.ts$/.test(rel)) {
        const url = pathToFileURL(path.join(dir, rel)).href;
        const modulePath = rel.replace(/\.[jt]s$/, "");
        const load = async () => instrumentModule(await import(url), modulePath, prefix);
        glob[`./${rel}`] = load;
        byModule.set(modulePath, load);
      }
    }
  };
  walk("");
  if (!Object.keys(glob).some((k) => k.startsWith("./_generated/"))) throw new Fatal(`no _generated/ directory in ${dir}`);
  return { glob, byModule };
}

/** schema.ts's default export, plus the table only localconvex adds (see restore()). */
async function loadSchema(dir: string, byModule: Map<string, () => Promise<any>>) {
  const load = byModule.get("schema");
  const real: SchemaDefinition<any, boolean> | undefined = load && (await load()).default;
  if (!real?.tables) throw new Fatal(`${dir} has no schema.ts whose default export is made by defineSchema`);
  const schema = defineSchema({ ...real.tables, [GAPS_TABLE]: defineTable({}) }, { schemaValidation: real.schemaValidation });
  return { schema, tables: Object.keys(real.tables) };
}

/**
 * The components the app's convex.config.ts installs, as Convex's bundler finds them: each
 * definition it imports (a relative `.../convex.config` module) is loaded first and given its
 * folder, which app.use() needs and only the Convex runtime supplies; then the app's definition
 * says under which names they are installed. Components see the server's one environment (the
 * env values app.use binds are not applied).
 */
async function loadComponents(dir: string) {
  const config = ["convex.config.ts", "convex.config.js"].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  if (config === undefined) return [];
  const text = fs.readFileSync(config, "utf8");
  for (const [, specifier] of text.matchAll(/from\s+["'](\.{1,2}\/[^"']*convex\.config(?:\.[jt]s)?)["']/g)) {
    const resolved = path.resolve(dir, specifier).replace(/\.js$/, "");
    const file = [".ts", ".js", ""].map((ext) => `${resolved.replace(/\.ts$/, "")}${ext}`).find((f) => fs.existsSync(f) && fs.statSync(f).isFile());
    if (file === undefined) throw new Fatal(`${config} imports ${specifier}, which does not exist`);
    const definition = (await import(pathToFileURL(file).href)).default;
    definition.componentDefinitionPath = path.dirname(file);
    definition.defaultName = definition._name;
  }
  const app = (await import(pathToFileURL(config).href)).default;
  return (app._childComponents as [string, { componentDefinitionPath: string }][]).map(([name, definition]) => ({
    name,
    dir: definition.componentDefinitionPath,
  }));
}

const KIND_NAMES: Record<Kind, string> = { query: "Query", mutation: "Mutation", action: "Action" };

/**
 * Checks what real Convex checks before running a function: it exists, is public
 * (internal functions get the same answer as missing ones, unless the caller has the
 * admin key) and has the kind the endpoint asks for. Returns the canonical path, or an
 * error message.
 */
async function resolveFunction(byModule: Map<string, () => Promise<any>>, kind: Kind, udfPath: string, admin: boolean) {
  const parts = udfPath.split(":");
  const modulePath = parts[0].replace(/\.js$/, "");
  const canonical = `${modulePath}:${parts[1] ?? "default"}`;
  const missing = { error: `Could not find public function for '${canonical}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?` };
  const load = byModule.get(modulePath);
  if (parts.length > 2 || !load || modulePath.startsWith("_generated/") || modulePath === "schema") return missing;
  const fn = (await load())[parts[1] ?? "default"];
  if (!fn || !(fn.isPublic === true || (admin && fn.isInternal === true))) return missing;
  const defined = fn.isQuery ? "Query" : fn.isMutation ? "Mutation" : fn.isAction ? "Action" : null;
  if (defined === null) return missing;
  if (defined !== KIND_NAMES[kind]) return { error: `Trying to execute ${canonical} as ${KIND_NAMES[kind]}, but it is defined as ${defined}.` };
  return { canonical };
}

// ---------------------------------------------------------------------------- state file

const idCounter = (id: string) => Number(/^\d+/.exec(id)?.[0] ?? NaN);

/**
 * Every component's documents, the scheduled functions that have not run yet, and its id
 * counter (probed by inserting and deleting a placeholder). convex-test runs one transaction
 * per component here (it cannot nest them), so a mutation may land between two of them: each
 * part contains every mutation committed before dump() was called, which is what
 * acknowledging needs; a restored state may show a later mutation in some components only.
 */
async function dump(t: Tester, stores: Store[], clock: Clock): Promise<Snapshot> {
  // Handed out through a closure, not as t.run's return value: that one would make a
  // JSON round trip of the whole database.
  const components: Record<string, Part> = {};
  for (const store of stores) {
    await inComponent(t, store.path, async (ctx) => {
      const tables: Record<string, Doc[]> = {};
      for (const table of store.tables) tables[table] = await ctx.db.query(table).collect();
      const scheduled = await unfinishedScheduled(ctx);
      const probe = await ctx.db.insert(GAPS_TABLE, {});
      await ctx.db.delete(probe);
      components[store.path] = { nextIdCounter: idCounter(probe) + 1, tables, scheduled };
    });
  }
  return { version: 2, components, ts: clock.last };
}

const unfinishedScheduled = async (ctx: any): Promise<Doc[]> =>
  (await ctx.db.system.query("_scheduled_functions").collect()).filter((job: any) => job.state.kind === "pending" || job.state.kind === "inProgress");

/** When the earliest scheduled function that has not finished is due (null: none). */
async function nextScheduled(t: Tester, stores: Store[]): Promise<number | null> {
  let due: number | null = null;
  for (const store of stores)
    await inComponent(t, store.path, async (ctx) => {
      for (const job of await unfinishedScheduled(ctx)) due = Math.min(due ?? Infinity, job.scheduledTime);
    });
  return due;
}

/** Runs handler as a transaction of one component (convex-test keeps one database per component). */
function inComponent(t: Tester, componentPath: string, handler: (ctx: any) => Promise<void>): Promise<unknown> {
  return (t as any).runInComponent(componentPath, handler);
}

/**
 * Re-inserts one component's saved documents so that they get their old _ids back:
 * convex-test has no "insert with this id", but gives ids from a counter (one per
 * component), so documents are inserted in counter order and every counter value no saved
 * document has (deleted documents, rolled-back inserts, finished scheduled functions, dump
 * probes) is burnt by inserting and deleting a placeholder. Date.now is pinned during each
 * insert so _creationTime is kept too. Scheduled functions that had not finished are
 * scheduled again (at-least-once; they wait their original delay again).
 */
async function restore(t: Tester, componentPath: string, part: Part) {
  const byCounter = new Map<number, { table: string; doc: Doc }>();
  const entries = Object.entries(part.tables).flatMap(([table, docs]) => docs.map((doc) => ({ table, doc })));
  for (const doc of part.scheduled) entries.push({ table: "_scheduled_functions", doc });
  for (const { table, doc } of entries) {
    const counter = idCounter(String(doc._id));
    if (!(counter >= FIRST_ID_COUNTER && counter < part.nextIdCounter) || byCounter.has(counter) || !String(doc._id).endsWith(table))
      throw new Error(`bad or duplicate document id ${JSON.stringify(doc._id)} in table ${table}`);
    byCounter.set(counter, { table, doc });
  }
  await inComponent(t, componentPath, async (ctx: any) => {
    const realNow = Date.now;
    let lastCreationTime = 0;
    try {
      for (let counter = FIRST_ID_COUNTER; counter < part.nextIdCounter; counter++) {
        const saved = byCounter.get(counter);
        if (saved === undefined) {
          Date.now = () => lastCreationTime; // convex-test then uses lastCreationTime + 0.001
          await ctx.db.delete(await ctx.db.insert(GAPS_TABLE, {}));
          continue;
        }
        const { _id, _creationTime, ...fields } = saved.doc;
        lastCreationTime = _creationTime;
        Date.now = () => lastCreationTime;
        const id =
          saved.table === "_scheduled_functions"
            ? await ctx.scheduler.runAt(fields.scheduledTime, makeFunctionReference(fields.name), fields.args[0])
            : await ctx.db.insert(saved.table, fields);
        if (id !== _id) throw new Error(`restored document got id ${id} instead of ${_id}`);
      }
    } finally {
      Date.now = realNow;
    }
  });
}

/** Reads the state file into t. Returns false when the file does not exist. */
async function load(file: string, t: Tester, stores: Store[], clock: Clock): Promise<boolean> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e: any) {
    if (e.code === "ENOENT") return false;
    throw new Fatal(`cannot read state file ${file}: ${e.message}`);
  }
  try {
    const snapshot = jsonToConvex(JSON.parse(text)) as Snapshot;
    if (snapshot?.version !== 2 || typeof snapshot.components !== "object")
      throw new Error("not a localconvex state file (version 2; files from before the queue became a component are version 1)");
    for (const [componentPath, part] of Object.entries(snapshot.components)) {
      if (!stores.some((store) => store.path === componentPath)) throw new Error(`no component ${JSON.stringify(componentPath)} in this app`);
      if (typeof part?.nextIdCounter !== "number" || typeof part.tables !== "object" || !Array.isArray(part.scheduled))
        throw new Error(`component ${JSON.stringify(componentPath)} is malformed`);
      await restore(t, componentPath, part);
    }
    if (typeof snapshot.ts === "bigint") clock.observe(snapshot.ts);
    return true;
  } catch (e: any) {
    throw new Fatal(`state file ${file} is corrupt or does not match the schema: ${e.message}`);
  }
}

/**
 * Atomic replace: temp file (0600) + fsync + rename + fsync of the directory.
 * Asynchronous, so that mutations keep running (and queue for the next write) meanwhile.
 */
async function writeAtomically(file: string, text: string) {
  const tmp = `${file}.tmp-${process.pid}`;
  const handle = await fsp.open(tmp, "w", 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.rename(tmp, file);
  const dir = await fsp.open(path.dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * Group commit. sync() resolves once a snapshot taken after the call is on disk.
 * One write is in flight at a time; every sync() requested meanwhile is served by
 * the next single write, so N concurrent mutations cost ~2 dumps, not N.
 */
class Persister {
  private requested = 0;
  private handled = 0;
  private running = false;
  private waiters: { gen: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  constructor(private file: string, private t: Tester, private stores: Store[], private clock: Clock) {}

  sync(): Promise<void> {
    const gen = ++this.requested;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ gen, resolve, reject }));
    if (!this.running) void this.loop();
    return done;
  }

  private async loop() {
    this.running = true;
    while (this.handled < this.requested) {
      const target = this.requested;
      let error: unknown = null;
      try {
        // The dump is a transaction queued behind every mutation that committed before sync() was called.
        const snapshot = await dump(this.t, this.stores, this.clock);
        await writeAtomically(this.file, JSON.stringify(convexToJson(snapshot as Value)));
      } catch (e) {
        error = e;
        console.error(`localconvex: writing state file ${this.file} failed: ${e instanceof Error ? e.message : e}`);
      }
      this.handled = target;
      const ready = this.waiters.filter((w) => w.gen <= target);
      this.waiters = this.waiters.filter((w) => w.gen > target);
      for (const w of ready) error === null ? w.resolve() : w.reject(error);
    }
    this.running = false;
  }
}

/**
 * Scheduled functions commit outside any call: while some have not finished, `committed` is
 * called again shortly after the earliest is due (then the state is saved, subscriptions run).
 */
class ScheduledWatch {
  private timer: NodeJS.Timeout | undefined;
  private scanning = false;
  private again = false;
  constructor(private t: Tester, private stores: Store[], private committed: () => void) {}

  /** Something committed, which may have scheduled functions. */
  poke() {
    if (this.scanning) this.again = true;
    else void this.scan();
  }

  private async scan() {
    this.scanning = true;
    try {
      do {
        this.again = false;
        const due = await nextScheduled(this.t, this.stores);
        clearTimeout(this.timer);
        if (due !== null) this.timer = setTimeout(this.committed, Math.min(Math.max(due - Date.now(), 0) + 100, 2 ** 31 - 1)).unref();
      } while (this.again);
    } catch (e) {
      console.error(`localconvex: cannot list scheduled functions: ${e instanceof Error ? e.message : e}`);
    } finally {
      this.scanning = false;
    }
  }
}

// ---------------------------------------------------------------------------- who calls

/** Compares in time that depends only on the lengths. */
function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given), b = Buffer.from(expected);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/**
 * The Authorization header, as Convex reads it: `Convex <admin key>` may call internal
 * functions (only when CONVEX_ADMIN_KEY is set, and only with that key); `Bearer <JWT>` makes
 * the JWT's claims the caller's identity. The JWT is NOT verified: localconvex is a test
 * double, and any caller may claim any identity.
 */
function identify(header: string | undefined, adminKey: string | null): Caller | Reply {
  if (header === undefined) return { admin: false };
  const [scheme, credential = ""] = header.split(/ (.*)/s, 2);
  if (scheme === "Convex" || scheme === "Bearer") return identifyCredential(scheme, credential, adminKey);
  return { status: 401, body: { code: "InvalidAuthHeader", message: "the Authorization header must be `Bearer <JWT>` or `Convex <admin key>`" } };
}

/** An admin key (`Convex`) or a user's JWT (`Bearer`): over HTTP in the header, over the socket in Authenticate. */
function identifyCredential(scheme: "Convex" | "Bearer", credential: string, adminKey: string | null): Caller | Reply {
  if (scheme === "Convex") {
    if (adminKey !== null && sameSecret(credential, adminKey)) return { admin: true };
    return { status: 401, body: { code: "BadAdminKey", message: "The provided admin key was invalid for this instance" } };
  }
  const claims = jwtClaims(credential);
  if (claims === null || typeof claims.sub !== "string" || typeof claims.iss !== "string")
    return { status: 401, body: { code: "InvalidAuthHeader", message: "the Bearer token is not a JWT with string sub and iss claims" } };
  const { sub, iss, ...rest } = claims;
  return { admin: false, identity: { ...(rest as Partial<UserIdentity>), subject: sub, issuer: iss } };
}

function jwtClaims(token: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
    return typeof claims === "object" && claims !== null && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------- HTTP

/** integers: a plain JSON document (not Convex values, whose numbers are written as floats). */
type Reply = { status: number; body: unknown; integers?: boolean };
const badRequest = (code: string, message: string): Reply => ({ status: 400, body: { code, message } });

function udfError(e: unknown): Outcome {
  if (typeof e === "object" && e !== null && Symbol.for("ConvexError") in e) {
    // Like Convex: the message carries the data (JSON unless a string), errorData the data itself.
    const data = convexToJson(((e as any).data ?? null) as Value);
    return { ok: false, errorMessage: `Uncaught ConvexError: ${(e as Error).message}`, errorData: data };
  }
  return { ok: false, errorMessage: e instanceof Error ? `Uncaught ${e.name}: ${e.message}` : `Uncaught ${String(e)}` };
}

const httpBody = (outcome: Outcome) =>
  outcome.ok
    ? { status: "success", value: outcome.value, logLines: [] }
    : { status: "error", errorMessage: outcome.errorMessage, errorData: outcome.errorData, logLines: [] };

/** The state file could not be written: a write must not be acknowledged. */
class StateWriteFailed extends Error {}

function readBody(req: http.IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => resolve(size <= MAX_BODY_BYTES ? Buffer.concat(chunks) : null));
    req.on("error", reject);
    req.on("close", () => reject(new Error("the client closed the connection"))); // no-op after "end"
  });
}

async function main() {
  let opts: ReturnType<typeof parseCli>;
  try {
    opts = parseCli(process.argv.slice(2));
  } catch (e) {
    console.error(`localconvex: ${(e as Error).message} (${USAGE})`);
    process.exit(2);
  }

  setTimeLimit(opts.timeLimitMs);
  const dir = opts.functionsDir;
  const { glob, byModule } = loadModules(dir);
  const app = await loadSchema(dir, byModule);
  const t = convexTest(app.schema, glob);
  const stores: Store[] = [{ path: "", tables: app.tables }];
  for (const component of await loadComponents(dir)) {
    const modules = loadModules(component.dir, `${component.name}/`);
    const { schema, tables } = await loadSchema(component.dir, modules.byModule);
    t.registerComponent(component.name, schema, modules.glob);
    stores.push({ path: component.name, tables });
  }
  const adminKey = process.env.CONVEX_ADMIN_KEY || null;

  const clock = new Clock();
  let persister: Persister | null = null;
  if (opts.stateFile) {
    const found = await load(opts.stateFile, t, stores, clock);
    console.error(found ? `localconvex: restored state from ${opts.stateFile}` : `localconvex: state file ${opts.stateFile} does not exist; starting empty`);
    persister = new Persister(opts.stateFile, t, stores, clock);
    await persister.sync().catch((e) => {
      throw new Fatal(`cannot write state file ${opts.stateFile}: ${e.message}`);
    });
  }

  /** Runs a function as Convex would for this caller; a write is acknowledged once it is on disk. */
  async function execute(kind: Kind, udfPath: string, args: Value, caller: Caller): Promise<Outcome> {
    let found: { canonical?: string; error?: string };
    try {
      found = await resolveFunction(byModule, kind, udfPath, caller.admin);
    } catch (e) {
      return { ok: false, errorMessage: `Failed to load module for ${udfPath}: ${(e as Error).message}` };
    }
    if (found.error) return { ok: false, errorMessage: found.error };

    const ref = makeFunctionReference<any>(found.canonical!) as any;
    const as = caller.identity === undefined ? t : t.withIdentity(caller.identity);
    let outcome: Outcome;
    let wrote: boolean;
    try {
      const value = await (kind === "query" ? as.query(ref, args) : kind === "mutation" ? as.mutation(ref, args) : as.action(ref, args));
      outcome = { ok: true, value: convexToJson((value ?? null) as Value) };
      wrote = kind !== "query";
    } catch (e) {
      outcome = udfError(e);
      wrote = kind === "action"; // a failed action may have run mutations; a failed mutation rolled back
    }
    if (!wrote) return outcome;
    const ts = clock.tick();
    // Durability: acknowledge only once the state containing this call is on disk.
    try {
      await persister?.sync();
    } catch (e) {
      throw new StateWriteFailed(`could not write the state file: ${(e as Error).message}`);
    }
    committed();
    return outcome.ok ? { ...outcome, ts } : outcome;
  }

  const sync = new SyncServer<Caller>(
    {
      anonymous: { admin: false },
      // The same rules as the Authorization header of an HTTP call.
      authenticate(tokenType, value) {
        if (tokenType !== "Admin" && tokenType !== "User") return { admin: false };
        const caller = identifyCredential(tokenType === "Admin" ? "Convex" : "Bearer", value ?? "", adminKey);
        return "status" in caller ? { error: (caller.body as { message: string }).message } : caller;
      },
      key: (caller) => JSON.stringify([caller.admin, caller.identity ?? null]),
      run: execute,
    },
    clock,
  );
  const scheduled = new ScheduledWatch(t, stores, () => {
    clock.tick();
    persister?.sync().catch(() => {}); // logged by the persister
    committed();
  });
  // Scheduled functions restored from the state file: their commits reach subscribers too, even
  // when no call commits anything first.
  scheduled.poke();
  /** After every commit: subscribers see it, and a newly scheduled function gets its timer. */
  function committed(): void {
    sync.committed();
    scheduled.poke();
  }

  async function call(kind: Kind, req: http.IncomingMessage): Promise<Reply> {
    const caller = identify(req.headers.authorization, adminKey);
    if ("status" in caller) return caller;
    const raw = await readBody(req);
    if (raw === null) return { status: 413, body: { code: "PayloadTooLarge", message: `request body over ${MAX_BODY_BYTES} bytes` } };
    let body: any;
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch (e) {
      return badRequest("BadJsonBody", `Failed to parse the request body as JSON: ${(e as Error).message}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) return badRequest("BadJsonBody", "the request body must be a JSON object");
    if (typeof body.path !== "string" || body.path === "") return badRequest("BadJsonBody", "missing field `path` (a string like \"jobs:get\")");
    if (body.format !== undefined && body.format !== "json" && body.format !== "convex_encoded_json")
      return badRequest("BadRequest", `unsupported format ${JSON.stringify(body.format)} (use "json" or "convex_encoded_json")`);
    // Like Convex: args is an object, or a one-element array holding it (what the JS client sends).
    let args = Array.isArray(body.args) && body.args.length === 1 ? body.args[0] : body.args;
    if (typeof args !== "object" || args === null || Array.isArray(args)) return badRequest("BadRequest", "`args` must be a JSON object");
    try {
      args = jsonToConvex(args);
    } catch (e) {
      return badRequest("BadRequest", `invalid Convex JSON in \`args\`: ${(e as Error).message}`);
    }
    try {
      return { status: 200, body: httpBody(await execute(kind, body.path, args, caller)) };
    } catch (e) {
      if (!(e instanceof StateWriteFailed)) throw e;
      return { status: 500, body: { code: "StateWriteFailed", message: e.message } };
    }
  }

  /** Only the admin may reset what an operator or the bench reads. */
  function resetAsAdmin(req: http.IncomingMessage): Reply {
    const caller = identify(req.headers.authorization, adminKey);
    if ("status" in caller) return caller;
    if (!caller.admin) return { status: 401, body: { code: "BadAdminKey", message: "resetting usage needs the admin key" } };
    resetUsage();
    return { status: 200, body: usageReport(), integers: true };
  }

  let stopping = false;
  let inFlight = 0;
  const routes: Record<string, Kind> = { "/api/query": "query", "/api/mutation": "mutation", "/api/action": "action" };

  const server = http.createServer(async (req, res) => {
    inFlight++;
    let reply: Reply;
    try {
      const pathname = new URL(req.url ?? "/", "http://localhost").pathname;
      const kind = routes[pathname];
      if (req.method === "GET" && pathname === "/health") reply = { status: 200, body: { ok: true } };
      else if (req.method === "GET" && pathname === "/_localconvex/usage") reply = { status: 200, body: usageReport(), integers: true };
      else if (req.method === "POST" && pathname === "/_localconvex/usage/reset") reply = resetAsAdmin(req);
      else if (!kind) reply = { status: 404, body: { code: "NotFound", message: `no route for ${req.method} ${pathname}` } };
      else if (req.method !== "POST") reply = { status: 405, body: { code: "MethodNotAllowed", message: `use POST for ${pathname}` } };
      else if (stopping) reply = { status: 503, body: { code: "ShuttingDown", message: "localconvex is shutting down" } };
      else reply = await call(kind, req);
    } catch (e) {
      console.error("localconvex: internal error:", e);
      reply = { status: 500, body: { code: "InternalServerError", message: String(e) } };
    }
    const text = reply.integers ? toEnvelopeJson(reply.body) : toWireJson(reply.body);
    res.writeHead(reply.status, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(text),
      ...(stopping ? { Connection: "close" } : {}),
    });
    res.end(text);
    inFlight--;
  });

  // SIGTERM/SIGINT: stop accepting, let in-flight calls finish (up to 5 s), flush, exit 0.
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`localconvex: ${signal}, shutting down`);
    server.close();
    server.closeIdleConnections();
    sync.close();
    for (let waited = 0; inFlight > 0 && waited < 5_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
    try {
      await persister?.sync();
    } catch {
      process.exit(1);
    }
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  // Node closes idle keep-alive connections after 5 s; a client reusing one at that moment sees its
  // mutation cut off after sending. Hosted deployments keep connections far longer: so do we.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  server.on("upgrade", (req, socket, head) => {
    if (stopping || !sync.upgrade(req, socket, head)) socket.destroy();
  });

  server.on("error", (e) => {
    console.error(`localconvex: cannot listen on ${opts.host}:${opts.port}: ${e.message}`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address() as { address: string; port: number };
    const host = address.includes(":") ? `[${address}]` : address;
    process.stdout.write(`localconvex ready on http://${host}:${port}\n`);
  });
}

main().catch((e) => {
  console.error(`localconvex: ${e instanceof Fatal ? e.message : e?.stack ?? e}`);
  process.exit(1);
});
