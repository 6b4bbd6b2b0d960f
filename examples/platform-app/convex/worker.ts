// The agents' functions, as in the repository's own app.
import { queue } from "./queue";

export const { claim, heartbeat, saveDocs, complete, fail, release, canceled, queueDepth, nextDue } = queue.workerApi();
