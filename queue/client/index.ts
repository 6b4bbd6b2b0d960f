// The client a host app uses to run the queue component it installed (app.use(fondationQueue)):
// its own functions call these methods, which is where the app puts its access rules (a
// component's functions are never reachable by clients, and cannot see ctx.auth).
import {
  createFunctionHandle,
  mutationGeneric,
  queryGeneric,
  type FunctionReference,
  type PaginationOptions,
  type GenericDataModel,
  type GenericMutationCtx,
  type GenericQueryCtx,
} from "convex/server";
import type { Infer } from "convex/values";
import type { ComponentApi } from "../component/_generated/api";
import { jobStatus, workerArgs } from "../component/validators";

// What a host app builds its own functions with: the component's argument validators, its
// refusals, and the type of `components.<name>` in its generated api.
export type { ComponentApi } from "../component/_generated/api";
export type { DocKind } from "../component/lib";
export { refuse } from "../component/lib";
export { docKind, jobRequest, jobStatus } from "../component/validators";

type QueryCtx = Pick<GenericQueryCtx<GenericDataModel>, "runQuery">;
type MutationCtx = Pick<GenericMutationCtx<GenericDataModel>, "runQuery" | "runMutation">;
/** Who a call acts for: a user (only their jobs, the user rules), or, without userId, the operator. */
export type Scope = { userId?: string };
export type JobStatus = Infer<typeof jobStatus>;

/** The app's mutation run once a job completes: it gets the job id and the context given at enqueue. */
export type OnComplete = FunctionReference<"mutation", "internal", { jobId: string; context?: any }>;

/** What the app's onStatusChange mutation gets at each change of a job's status (its own transaction). */
export type StatusChange = {
  jobId: string;
  context?: any;
  oldStatus: JobStatus;
  newStatus: JobStatus;
  /** The job's error after the change (a failure's, or a cancel's reason). */
  error?: string;
  attempt: number;
};
export type OnStatusChange = FunctionReference<"mutation", "internal", StatusChange>;
export type Callbacks = { onComplete?: OnComplete; onStatusChange?: OnStatusChange };

export type EnqueueArgs = Callbacks & {
  repositoryUrl: string;
  prompt: string;
  branch?: string;
  dedupKey?: string;
  maxAttempts?: number;
  /** The job's owner, as the app names its users. */
  userId?: string;
  repositoryId?: string;
  /** Refuse (conflict) when `userId` already has this many unfinished jobs. */
  maxUnfinished?: number;
  /** The app's own data about the job, returned with it (at most maxMetadataBytes as JSON). */
  metadata?: any;
  /** Passed to the onComplete and onStatusChange mutations. */
  context?: any;
};

export class FondationQueue {
  /** `options`: the callbacks of every job this client queues, unless its enqueue names others. */
  constructor(
    public readonly component: ComponentApi,
    private readonly options: Callbacks = {},
  ) {}

  async enqueue(ctx: MutationCtx, { context, onComplete, onStatusChange, ...args }: EnqueueArgs): Promise<string> {
    const handle = async (reference: FunctionReference<"mutation", "internal", any> | undefined) =>
      reference === undefined ? undefined : { handle: await createFunctionHandle(reference), context };
    return await ctx.runMutation(this.component.jobs.enqueue, {
      ...args,
      onComplete: await handle(onComplete ?? this.options.onComplete),
      onStatusChange: await handle(onStatusChange ?? this.options.onStatusChange),
    });
  }

  async get(ctx: QueryCtx, jobId: string, scope: Scope = {}) {
    return await ctx.runQuery(this.component.jobs.get, { jobId, ...scope });
  }

  /** A page of jobs, newest first, of an owner, a status and a repository (each optional). */
  async list(
    ctx: QueryCtx,
    args: { status?: JobStatus; repositoryId?: string; paginationOpts: PaginationOptions } & Scope,
  ) {
    return await ctx.runQuery(this.component.jobs.list, args);
  }

  /** Cancels the job; `reason` becomes the canceled job's error. */
  async cancel(ctx: MutationCtx, jobId: string, args: Scope & { reason?: string } = {}) {
    return await ctx.runMutation(this.component.jobs.cancel, { jobId, ...args });
  }

  async retry(ctx: MutationCtx, jobId: string, scope: Scope = {}) {
    return await ctx.runMutation(this.component.jobs.retry, { jobId, ...scope });
  }

  async stats(ctx: QueryCtx, scope: Scope = {}) {
    return await ctx.runQuery(this.component.jobs.stats, scope);
  }

  /** A page of the documents of a completed job, in chapter order (none otherwise). */
  async docs(ctx: QueryCtx, jobId: string, args: Scope & { paginationOpts: PaginationOptions }) {
    return await ctx.runQuery(this.component.docs.byJob, { jobId, ...args });
  }

  /** The job's live logs: the last lines of its CLI's output, oldest first ({level, text}). */
  async logs(ctx: QueryCtx, jobId: string, scope: Scope = {}) {
    return await ctx.runQuery(this.component.logs.byJob, { jobId, ...scope });
  }

  /**
   * Upgrading a deployment: gives the jobs queued before shards and counters existed a shard and
   * counts them, a batch now and the rest in scheduled functions. `more`: batches are still to come
   * (`backfillPending` says when they are done). Running it again is harmless.
   */
  async backfill(ctx: MutationCtx) {
    return await ctx.runMutation(this.component.migrations.backfill, {});
  }

  /** Whether jobs queued before shards and counters existed are still to be backfilled. */
  async backfillPending(ctx: QueryCtx) {
    return await ctx.runQuery(this.component.migrations.backfillPending, {});
  }

  /**
   * The worker functions for the app to export from its `worker` module, so agents keep calling
   * `worker:claim`, `worker:heartbeat`, …: public mutations that the component answers after
   * checking the worker token itself.
   *
   *   export const { claim, heartbeat, saveDocs, complete, fail, release, canceled, queueDepth, nextDue } = queue.workerApi();
   */
  workerApi() {
    const worker = this.component.worker;
    return {
      claim: mutationGeneric({ args: workerArgs.claim, handler: (ctx, args) => ctx.runMutation(worker.claim, args) }),
      heartbeat: mutationGeneric({ args: workerArgs.heartbeat, handler: (ctx, args) => ctx.runMutation(worker.heartbeat, args) }),
      saveDocs: mutationGeneric({ args: workerArgs.saveDocs, handler: (ctx, args) => ctx.runMutation(worker.saveDocs, args) }),
      complete: mutationGeneric({ args: workerArgs.complete, handler: (ctx, args) => ctx.runMutation(worker.complete, args) }),
      fail: mutationGeneric({ args: workerArgs.fail, handler: (ctx, args) => ctx.runMutation(worker.fail, args) }),
      release: mutationGeneric({ args: workerArgs.release, handler: (ctx, args) => ctx.runMutation(worker.release, args) }),
      canceled: mutationGeneric({ args: workerArgs.canceled, handler: (ctx, args) => ctx.runMutation(worker.canceled, args) }),
      queueDepth: queryGeneric({ args: workerArgs.queueDepth, handler: (ctx, args) => ctx.runQuery(worker.queueDepth, args) }),
      nextDue: queryGeneric({ args: workerArgs.nextDue, handler: (ctx, args) => ctx.runQuery(worker.nextDue, args) }),
    };
  }
}
