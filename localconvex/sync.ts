/**
 * Convex's WebSocket sync protocol (the `convex` npm package's src/browser/sync/protocol.ts),
 * enough for the official JS (`convex/browser`) and Python (`convex`, over the Rust crate)
 * clients: subscriptions, one-off queries, mutations, actions and authentication.
 *
 * A subscription is served the way the backend's contract reads, not the way it is built:
 * after every commit each connection's queries run again, and what changed goes out in a
 * Transition from the connection's last version to the current one. Functions run through
 * the same `run` as the HTTP API, so identities and the admin key are checked alike.
 */
import type http from "node:http";
import type { Duplex } from "node:stream";
import { convexToJson, jsonToConvex, type Value } from "convex/values";
import { WebSocket, WebSocketServer } from "ws";
import { ConvexJson, toEnvelopeJson } from "./wire.js";

export type Kind = "query" | "mutation" | "action";
/** What a function gave, its value and errorData in Convex's JSON encoding; ts: a write's commit. */
export type Outcome = { ok: true; value: unknown; ts?: bigint } | { ok: false; errorMessage: string; errorData?: unknown };
/** Runs a public function as `caller` (an opaque value made by `authenticate`). */
export type Runner<Caller> = {
  anonymous: Caller;
  /** The caller an Authenticate message makes, or why it is refused. */
  authenticate(tokenType: string, value: string | undefined): Caller | { error: string };
  /** A cache key: callers with the same key see the same query results. */
  key(caller: Caller): string;
  run(kind: Kind, udfPath: string, args: Value, caller: Caller): Promise<Outcome>;
};

/** `Ping`s keep the clients' inactivity timers quiet (the Rust client gives up after 30 s). */
const PING_INTERVAL_MS = 10_000;
const SYNC_PATH = /^\/api(?:\/[^/]+)?\/sync$/;

/**
 * The deployment's timestamp, in Unix nanoseconds like Convex's: it only grows, across
 * restarts too (it is saved with the state), because a client that has seen a later
 * timestamp than the server's gives up on it.
 */
export class Clock {
  constructor(public last = 0n) {}
  /** A new commit. */
  tick(): bigint {
    const now = BigInt(Date.now()) * 1_000_000n;
    this.last = now > this.last ? now : this.last + 1n;
    return this.last;
  }
  /** A timestamp a client has seen (from an earlier run without --state, say). */
  observe(ts: bigint) {
    if (ts > this.last) this.last = ts;
  }
}

/** The base64 of a little-endian u64, as the protocol encodes timestamps. */
function encodeTs(ts: bigint): string {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(ts);
  return bytes.toString("base64");
}

function decodeTs(text: string): bigint {
  const bytes = Buffer.from(text, "base64");
  return bytes.length === 8 ? bytes.readBigUInt64LE() : 0n;
}

/** Absent for a plain error: the clients take any errorData, null included, for a ConvexError's. */
const wireErrorData = (data: unknown) => (data === undefined ? undefined : new ConvexJson(data));

type Query = { udfPath: string; args: Value; sent?: string };
type Version = { querySet: number; identity: number; ts: bigint };

class Connection<Caller> {
  private caller: Caller;
  private queries = new Map<number, Query>();
  private removed = new Set<number>();
  /** The version the client has: each Transition starts there. */
  private version: Version = { querySet: 0, identity: 0, ts: 0n };
  /** The version the next Transition ends at (query set and identity as the client asked). */
  private wanted = { querySet: 0, identity: 0 };
  /** A mutation was answered: the next round sends a Transition even if nothing changed. */
  private acked = false;
  private refreshing = false;
  private again = false;
  private ping: NodeJS.Timeout;

  constructor(private socket: WebSocket, private hub: SyncServer<Caller>) {
    this.caller = hub.runner.anonymous;
    this.ping = setInterval(() => this.send({ type: "Ping" }), PING_INTERVAL_MS).unref();
    socket.on("message", (data) => void this.receive(String(data)).catch((e) => this.fatal(String(e))));
    socket.on("close", () => {
      clearInterval(this.ping);
      hub.connections.delete(this);
    });
  }

  send(message: object) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(toEnvelopeJson(message));
  }

  fatal(error: string) {
    this.send({ type: "FatalError", error });
    this.socket.close(1011, error.slice(0, 120));
  }

  private async receive(text: string) {
    const message = JSON.parse(text);
    switch (message.type) {
      case "Connect":
        if (typeof message.maxObservedTimestamp === "string") this.hub.clock.observe(decodeTs(message.maxObservedTimestamp));
        return;
      case "ModifyQuerySet":
        if (message.baseVersion !== this.wanted.querySet) return this.fatal(`ModifyQuerySet from version ${message.baseVersion}, but the query set is at ${this.wanted.querySet}`);
        for (const change of message.modifications) {
          if (change.type === "Add") this.queries.set(change.queryId, { udfPath: change.udfPath, args: jsonToConvex(change.args[0] ?? {}) });
          else if (change.type === "Remove" && this.queries.delete(change.queryId)) this.removed.add(change.queryId);
        }
        this.wanted.querySet = message.newVersion;
        return this.refresh();
      case "Authenticate": {
        const caller = this.hub.runner.authenticate(message.tokenType, message.value);
        if (typeof caller === "object" && caller !== null && "error" in caller) {
          this.send({ type: "AuthError", error: caller.error, baseVersion: message.baseVersion, authUpdateAttempted: true });
          this.socket.close(1000, "AuthError");
          return;
        }
        this.caller = caller as Caller;
        this.wanted.identity = message.baseVersion + 1;
        for (const query of this.queries.values()) query.sent = undefined; // another caller: resend everything
        return this.refresh();
      }
      case "Mutation":
      case "Action": {
        const [kind, type] = message.type === "Mutation" ? (["mutation", "MutationResponse"] as const) : (["action", "ActionResponse"] as const);
        const outcome = await this.hub.runner.run(kind, message.udfPath, jsonToConvex(message.args[0] ?? {}), this.caller);
        if (outcome.ok) {
          const ts = kind === "mutation" ? encodeTs(outcome.ts ?? this.hub.clock.last) : undefined;
          this.send({ type, requestId: message.requestId, success: true, result: new ConvexJson(outcome.value), ts, logLines: [] });
        } else {
          this.send({ type, requestId: message.requestId, success: false, result: outcome.errorMessage, errorData: wireErrorData(outcome.errorData), logLines: [] });
        }
        if (kind === "action") return;
        // A mutation's promise resolves once a Transition (at or past its ts) follows its response;
        // in the Rust client, a failed one's too when it carries errorData.
        this.acked = true;
        return this.refresh();
      }
      default:
        return; // Event and anything newer: nothing to do for a test double
    }
  }

  /** Runs the queries again and sends what changed; rounds requested meanwhile coalesce into one. */
  async refresh() {
    if (this.refreshing) {
      this.again = true;
      return;
    }
    this.refreshing = true;
    try {
      do {
        this.again = false;
        await this.round();
      } while (this.again);
    } finally {
      this.refreshing = false;
    }
  }

  private async round() {
    const end: Version = { ...this.wanted, ts: this.hub.clock.last };
    const force = this.acked;
    this.acked = false;
    const modifications: object[] = [];
    for (const queryId of this.removed) modifications.push({ type: "QueryRemoved", queryId });
    this.removed.clear();
    for (const [queryId, query] of this.queries) {
      const outcome = await this.hub.query(query.udfPath, query.args, this.caller, end.ts);
      const update = outcome.ok
        ? { type: "QueryUpdated", queryId, value: new ConvexJson(outcome.value), logLines: [], journal: null }
        : { type: "QueryFailed", queryId, errorMessage: outcome.errorMessage, errorData: wireErrorData(outcome.errorData), logLines: [], journal: null };
      const text = toEnvelopeJson(update);
      if (this.queries.get(queryId) !== query || query.sent === text) continue; // removed meanwhile, or unchanged
      query.sent = text;
      modifications.push(update);
    }
    const same = end.querySet === this.version.querySet && end.identity === this.version.identity && end.ts === this.version.ts;
    if (same && modifications.length === 0 && !force) return;
    const wire = (v: Version) => ({ querySet: v.querySet, identity: v.identity, ts: encodeTs(v.ts) });
    this.send({ type: "Transition", startVersion: wire(this.version), endVersion: wire(end), modifications });
    this.version = end;
  }
}

export class SyncServer<Caller> {
  readonly connections = new Set<Connection<Caller>>();
  private wss = new WebSocketServer({ noServer: true });
  /** Results at one timestamp, shared by connections that ask the same as the same caller. */
  private memo = { ts: -1n, results: new Map<string, Promise<Outcome>>() };

  constructor(readonly runner: Runner<Caller>, readonly clock: Clock) {}

  /** Takes an HTTP upgrade to /api/sync or /api/<version>/sync; false for any other path. */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (!SYNC_PATH.test(new URL(req.url ?? "/", "http://localhost").pathname)) return false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.connections.add(new Connection(ws, this));
    });
    return true;
  }

  /** Something committed: every subscription is brought up to date. */
  committed() {
    for (const connection of this.connections) void connection.refresh().catch((e) => connection.fatal(String(e)));
  }

  query(udfPath: string, args: Value, caller: Caller, ts: bigint): Promise<Outcome> {
    if (this.memo.ts !== ts) this.memo = { ts, results: new Map() };
    const key = JSON.stringify([this.runner.key(caller), udfPath, convexToJson(args)]);
    let result = this.memo.results.get(key);
    if (result === undefined) {
      result = this.runner.run("query", udfPath, args, caller);
      this.memo.results.set(key, result);
    }
    return result;
  }

  /** Closes every socket (going away: the clients reconnect, to the next server on this port). */
  close() {
    for (const client of this.wss.clients) client.close(1001, "localconvex is shutting down");
  }
}
