/**
 * Whether a pod's network namespace path is gone, for the decisions that release a pod.
 *
 * @module
 */

/**
 * Whether a pod's netns path surely no longer exists (its sandbox went: the bind mount removed,
 * or `/proc/PID/ns/net` of a process that ended). Only NotFound counts: any other failure
 * (EACCES, ELOOP, …) leaves it in doubt, and a doubt must keep what may be a live pod.
 */
export function isNetnsGone(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return false;
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
}
