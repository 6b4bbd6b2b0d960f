// The app keeps no tables of its own: the queue's are the component's.
import { defineSchema } from "convex/server";

export default defineSchema({});
