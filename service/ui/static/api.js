// The page's only way to the service: fetch with the bearer key, errors as ApiError.
//
// The key lives in sessionStorage (this tab only, gone when it closes) and travels only in
// the Authorization header of same-origin requests; it is never written to a URL, the
// console, or the page.

const KEY_SLOT = "less.apiKey";

export const keyStore = {
  get: () => sessionStorage.getItem(KEY_SLOT),
  set: (key) => sessionStorage.setItem(KEY_SLOT, key),
  clear: () => sessionStorage.removeItem(KEY_SLOT),
};

/** A refused or failed call: HTTP status, the API's error code and its message verbatim. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// API paths are relative to the page (/ui), so the page also works behind a path prefix.
function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).toString();
}

async function errorFrom(response) {
  const retry = Number(response.headers.get("Retry-After")) || null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say; the status line is all there is to show
  }
  const error = body && body.error;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, error.code, error.message, retry);
  }
  return new ApiError(response.status, "http_" + response.status,
    `HTTP ${response.status} ${response.statusText}`.trim(), retry);
}

/**
 * Calls the API.
 *
 * @param {string} method HTTP method
 * @param {string} path e.g. "/v1/datastores"
 * @param {object} [options] `body` (sent as JSON), `as` ("json" default, or "text")
 * @returns {Promise<any>} the parsed body
 * @throws {ApiError} on any non-2xx answer or a network failure
 */
export async function api(method, path, { body, as = "json" } = {}) {
  const headers = { Accept: as === "json" ? "application/json" : "*/*" };
  const key = keyStore.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "network", `the service could not be reached (${error.message})`);
  }
  if (!response.ok) throw await errorFrom(response);
  return as === "text" ? response.text() : response.json();
}
