// Whether a selection runs as a direct request or as a background job.
//
// A direct answer is one JSON body that the service builds in memory and the browser parses
// at once; with explanations a row is ~0.5-1 KB, so 1,000 rows stay around a megabyte and
// well inside a request's time limit. Past that a job is the better road: the service writes
// the result to disk and streams it as JSONL, the work survives a dropped connection, and the
// progress bar shows how far it got.

export const JOB_THRESHOLD = 1000;
const DEFAULT_FRACTION = 0.05; // the wire contract's size when neither k, fraction nor budget

/** Rows a request may return at most, from its body and the pool's size. */
export function expectedRows(body, nExamples) {
  if (body.k !== undefined) return Math.min(body.k, nExamples);
  if (body.fraction !== undefined) return Math.ceil(body.fraction * nExamples);
  if (body.token_budget !== undefined) return nExamples; // a budget alone: bounded by the pool
  return Math.ceil(DEFAULT_FRACTION * nExamples);
}

/** "auto" picks a job above the threshold; "job" and "now" are the user's own choice. */
export function runsAsJob(mode, body, nExamples) {
  if (mode === "job") return true;
  if (mode === "now") return false;
  return expectedRows(body, nExamples) > JOB_THRESHOLD;
}
