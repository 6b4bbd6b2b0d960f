// The queue component as this app installed it.
import { FondationQueue } from "../queue/client";
import { components } from "./_generated/api";

export const queue = new FondationQueue(components.fondationQueue);
