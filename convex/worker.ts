// What agents call: the queue component's worker functions, each checking the worker token.
import { queue } from "./queue";

export const { claim, heartbeat, saveDocs, complete, fail, release, canceled, queueDepth, nextDue } = queue.workerApi();
