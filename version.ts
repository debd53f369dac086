/**
 * flock's release version, in a module of its own so that the agent can import it without
 * importing `main.ts` (the entry point awaits the mode it dispatches to; a static import of it
 * from that mode would deadlock module evaluation).
 *
 * @module
 */

/** flock's release version. */
export const FLOCK_VERSION = "0.1.0";
