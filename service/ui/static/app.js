// The LESS web page: key, datastore, selection form, results. No framework, no build step.
//
// Everything from the service is put into the page as text (textContent / DOM nodes, never
// innerHTML), so a pool row's text cannot become markup; the Content-Security-Policy of /ui
// backs that up by refusing any script but these files.

import { api, ApiError, keyStore } from "./api.js";
import { barChart, histogram } from "./charts.js";
import { parseExamples, parseResultLines, selectionJsonl } from "./jsonl.js";
import { JOB_THRESHOLD, runsAsJob } from "./plan.js";

const POLL_MS = 500;
const PAGE_ROWS = 100; // table rows rendered at a time (charts and download use them all)

const OPERATORS = [
  ["eq", "= (equals)"],
  ["in", "is one of (comma-separated)"],
  ["not_in", "is none of (comma-separated)"],
  ["gt", "> (greater than)"],
  ["gte", "≥ (at least)"],
  ["lt", "< (less than)"],
  ["lte", "≤ (at most)"],
];
const NUMERIC_OPS = new Set(["gt", "gte", "lt", "lte"]);

const state = {
  datastores: [],
  summary: null, // DatastoreSummary of the datastore shown
  fields: null, // FieldSummary[] from GET .../fields, or null when there is no field info
  result: null, // {datastore, selected, explained}
  shown: 0, // table rows rendered so far
  running: false,
};
let filterSerial = 0;

const $ = (id) => document.getElementById(id);

/** A DOM element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// -- status ------------------------------------------------------------------------------

/** Shows a message in the live region; errors say "Error:" in words, not only in red. */
function setStatus(message, kind = "info") {
  const box = $("status");
  box.className = `status ${kind}`;
  box.replaceChildren(kind === "error" ? h("strong", {}, "Error: ") : "", message);
}

/** The message for a failed call: the API's own error message, verbatim. */
function describe(error, doing) {
  if (error instanceof ApiError) {
    const retry = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
    if (error.status === 0) return `${doing}: ${error.message}`;
    return `${doing}: the service answered ${error.status} ${error.code}: ${error.message}${retry}`;
  }
  return `${doing}: ${error.message}`;
}

// -- formatting --------------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US");

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]} (${integer.format(n)} bytes)`;
}

function score(value) {
  return typeof value === "number" ? value.toFixed(4) : "—";
}

function valueText(value) {
  if (value === null || value === undefined) return "(missing)";
  return String(value);
}

// -- key ---------------------------------------------------------------------------------

function showKeyState() {
  const has = Boolean(keyStore.get());
  $("key-state").textContent = has
    ? "A key is set for this tab."
    : "No key set: type the key your team was given.";
  $("key-forget").disabled = !has;
  if (!has) {
    $("datastore-section").hidden = true;
    $("select-section").hidden = true;
    $("results-section").hidden = true;
  }
}

function useKey(event) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  if (!key) {
    setStatus("Type an API key first.", "error");
    input.focus();
    return;
  }
  keyStore.set(key);
  input.value = ""; // not left in the page; sessionStorage has it
  showKeyState();
  loadDatastores();
}

function forgetKey() {
  keyStore.clear();
  state.summary = null;
  state.result = null;
  showKeyState();
  setStatus("Key forgotten.");
  $("api-key").focus();
}

// -- datastores --------------------------------------------------------------------------

async function loadDatastores() {
  setStatus("Loading datastores…");
  let listing;
  try {
    listing = await api("GET", "/v1/datastores");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      keyStore.clear(); // a refused key is not tried again on every click
      showKeyState();
    }
    setStatus(describe(error, "Could not list datastores"), "error");
    return;
  }
  state.datastores = listing.datastores;
  const select = $("datastore");
  const previous = select.value;
  select.replaceChildren(
    ...state.datastores.map((d) =>
      h("option", { value: d.name }, `${d.name} (${integer.format(d.n_examples)} rows)`),
    ),
  );
  $("datastore-section").hidden = false;
  if (!state.datastores.length) {
    setStatus("This key may use no datastore.", "error");
    $("select-section").hidden = true;
    return;
  }
  if (state.datastores.some((d) => d.name === previous)) select.value = previous;
  await loadDatastore(select.value);
}

async function loadDatastore(name) {
  setStatus(`Loading datastore ${name}…`);
  let summary;
  try {
    summary = await api("GET", `/v1/datastores/${encodeURIComponent(name)}`);
  } catch (error) {
    setStatus(describe(error, `Could not read datastore ${name}`), "error");
    return;
  }
  let fields = null;
  try {
    fields = (await api("GET", `/v1/datastores/${encodeURIComponent(name)}/fields`)).fields;
  } catch (error) {
    // 404: a service without the fields endpoint (or a datastore without field info).
    if (!(error instanceof ApiError && error.status === 404)) {
      setStatus(describe(error, `Could not read the fields of ${name}`), "error");
    }
  }
  state.summary = summary;
  state.fields = fields;
  renderSummary(summary);
  renderFields(summary, fields);
  prepareForm(summary);
  $("select-section").hidden = false;
  setStatus(`Datastore ${name} loaded: ${integer.format(summary.n_examples)} rows.`, "ok");
}

function renderSummary(s) {
  const p = s.projector;
  const items = [
    ["Name", s.name],
    ["Version", s.version],
    ["Model", s.model_id],
    ["Rows", integer.format(s.n_examples)],
    ["Shards", s.n_shards ?? "—"],
    ["Index", s.index_factory ? `${s.index_factory}${s.index_factory === "Flat" ? " (exact)" : ""}` : "—"],
    ["Size on disk", bytes(s.size_bytes)],
    ["Projector", `${p.kind}, dim ${p.dim}, seed ${p.seed}, scope ${p.scope}`],
    ["Features", s.feature_dtype],
    ["Built", s.created_at],
  ];
  $("summary").replaceChildren(
    ...items.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, String(value))]),
  );
  $("checkpoints").tBodies[0].replaceChildren(
    ...s.checkpoints.map((c) =>
      h("tr", {}, h("th", { scope: "row" }, c.name), h("td", {}, String(c.lr)), h("td", {}, c.weight.toFixed(4))),
    ),
  );
}

function renderFields(summary, fields) {
  const box = $("fields");
  if (!fields) {
    const names = summary.fields || [];
    box.replaceChildren(
      h("p", { id: "no-field-info" }, "no field info"),
      names.length ? h("p", {}, `Stored fields: ${names.join(", ")}`) : "",
    );
    return;
  }
  if (!fields.length) {
    box.replaceChildren(h("p", {}, "The pool rows carry no metadata fields."));
    return;
  }
  const rows = fields.map((f) => {
    const values =
      f.kind === "int" || f.kind === "float"
        ? `${f.min ?? "—"} to ${f.max ?? "—"}`
        : f.top_values.map((v) => `${valueText(v.value)}: ${integer.format(v.count)}`).join(", ");
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, f.name),
      h("td", {}, f.kind),
      h("td", {}, integer.format(f.n_distinct)),
      h("td", {}, integer.format(f.n_missing)),
      h("td", { class: "values" }, values || "—"),
    );
  });
  box.replaceChildren(
    h(
      "table",
      { class: "grid", id: "fields-table" },
      h("caption", { class: "sr-only" }, "Pool metadata fields and their value counts"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...["Field", "Kind", "Distinct", "Missing", "Values (rows) or range"].map((t) =>
            h("th", { scope: "col" }, t),
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

// -- the form ----------------------------------------------------------------------------

function fieldNames() {
  return state.fields ? state.fields.map((f) => f.name) : state.summary?.fields || [];
}

function fieldInfo(name) {
  return state.fields ? state.fields.find((f) => f.name === name) || null : null;
}

function prepareForm(summary) {
  $("job-threshold").textContent = integer.format(JOB_THRESHOLD);
  $("checkpoint-choices").replaceChildren(
    ...summary.checkpoints.map((c, i) =>
      h(
        "span",
        { class: "choice" },
        h("input", { type: "checkbox", id: `ckpt-${i}`, value: c.name, checked: true }),
        h("label", { for: `ckpt-${i}` }, `${c.name} (weight ${c.weight.toFixed(3)})`),
      ),
    ),
  );
  $("filters").replaceChildren();
  updateFiltersEmpty();
  $("filter-add").disabled = !fieldNames().length;
  const groupBy = $("group-by");
  const names = fieldNames();
  groupBy.replaceChildren(
    h("option", { value: "" }, "subtask"),
    ...names.map((n) => h("option", { value: n }, n)),
  );
  groupBy.value = names.includes("task") ? "task" : "";
}

function updateFiltersEmpty() {
  $("filters-empty").hidden = $("filters").children.length > 0;
  if (!fieldNames().length) {
    $("filters-empty").textContent = "No metadata fields to filter on in this datastore.";
    $("filters-empty").hidden = false;
  }
}

function fillValueSuggestions(row) {
  const info = fieldInfo(row.querySelector(".filter-field").value);
  const list = row.querySelector("datalist");
  list.replaceChildren(
    ...(info?.top_values || []).map((v) => h("option", { value: valueText(v.value) })),
  );
}

function addFilter() {
  const n = ++filterSerial;
  const names = fieldNames();
  const row = h(
    "div",
    { class: "filter-row", role: "group", "aria-label": `Filter ${n}` },
    h("label", { for: `filter-field-${n}` }, "Field"),
    h(
      "select",
      { id: `filter-field-${n}`, class: "filter-field" },
      names.map((name) => h("option", { value: name }, name)),
    ),
    h("label", { for: `filter-op-${n}` }, "Condition"),
    h(
      "select",
      { id: `filter-op-${n}`, class: "filter-op" },
      OPERATORS.map(([op, text]) => h("option", { value: op }, text)),
    ),
    h("label", { for: `filter-value-${n}` }, "Value"),
    h("input", {
      id: `filter-value-${n}`,
      class: "filter-value",
      type: "text",
      list: `filter-values-${n}`,
      autocomplete: "off",
    }),
    h("datalist", { id: `filter-values-${n}` }),
    h(
      "button",
      {
        type: "button",
        class: "filter-remove",
        "aria-label": `Remove filter ${n}`,
        onclick: () => {
          row.remove();
          updateFiltersEmpty();
          $("filter-add").focus();
        },
      },
      "Remove",
    ),
  );
  if (names.includes("task")) row.querySelector(".filter-field").value = "task";
  row.querySelector(".filter-field").addEventListener("change", () => fillValueSuggestions(row));
  $("filters").append(row);
  fillValueSuggestions(row);
  updateFiltersEmpty();
  row.querySelector(".filter-field").focus();
}

/** One filter value typed as the field's kind wants it; throws with a message otherwise. */
function typedValue(text, field, op) {
  const kind = fieldInfo(field)?.kind;
  const numeric = () => {
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value)) {
      throw new Error(`filter on ${field}: '${text}' is not a number`);
    }
    return value;
  };
  if (NUMERIC_OPS.has(op)) {
    if (kind === "string" || kind === "bool") {
      throw new Error(`filter on ${field}: a ${kind} field takes =, is one of, is none of`);
    }
    return numeric();
  }
  if (kind === "int" || kind === "float") return numeric();
  if (kind === "bool") {
    if (text === "true" || text === "false") return text === "true";
    throw new Error(`filter on ${field}: '${text}' is not true or false`);
  }
  return text; // a string field (or no field info: compared as text)
}

function readFilters() {
  // No prototype: a field may be called "constructor" or "__proto__".
  const filter = Object.create(null);
  for (const row of $("filters").children) {
    const field = row.querySelector(".filter-field").value;
    const op = row.querySelector(".filter-op").value;
    const raw = row.querySelector(".filter-value").value;
    if (!field) throw new Error("a filter has no field");
    if (raw.trim() === "") throw new Error(`filter on ${field}: type a value`);
    const condition = (filter[field] ||= Object.create(null));
    if (op in condition) throw new Error(`filter on ${field}: the same condition twice`);
    condition[op] =
      op === "in" || op === "not_in"
        ? raw.split(",").map((part) => typedValue(part.trim(), field, op))
        : typedValue(raw, field, op);
  }
  return Object.keys(filter).length ? filter : undefined;
}

function numberInput(id, what, { integerOnly = false, check } = {}) {
  const input = $(id);
  // A number input reads "" for text it cannot parse ("1e", "abc"): say so, not "unset".
  if (input.validity && input.validity.badInput) throw new Error(`${what} must be a number`);
  const text = input.value.trim();
  if (text === "") return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || (integerOnly && !Number.isInteger(value))) {
    throw new Error(`${what} must be ${integerOnly ? "a whole number" : "a number"}`);
  }
  const problem = check && check(value);
  if (problem) throw new Error(`${what} ${problem}`);
  return value;
}

/** The request body from the form, or the reasons it cannot be sent. */
function buildRequest() {
  const errors = [];
  const targets = parseExamples($("targets").value, "targets");
  showErrors("targets-errors", targets.errors);
  errors.push(...targets.errors);
  let avoid = { examples: [], errors: [] };
  if ($("avoid").value.trim() !== "") avoid = parseExamples($("avoid").value, "avoid");
  showErrors("avoid-errors", avoid.errors);
  errors.push(...avoid.errors);

  const body = { targets: targets.examples };
  const attempt = (fn) => {
    try {
      fn();
    } catch (error) {
      errors.push(error.message);
    }
  };
  attempt(() => {
    const k = numberInput("k", "k", { integerOnly: true, check: (v) => (v < 1 ? "must be at least 1" : null) });
    const fraction = numberInput("fraction", "the fraction", {
      check: (v) => (v <= 0 || v > 1 ? "must be above 0 and at most 1" : null),
    });
    if (k !== undefined && fraction !== undefined) throw new Error("give either k or a fraction, not both");
    if (k !== undefined) body.k = k;
    if (fraction !== undefined) body.fraction = fraction;
  });
  attempt(() => {
    const budget = numberInput("token-budget", "the token budget", {
      integerOnly: true,
      check: (v) => (v < 1 ? "must be at least 1" : null),
    });
    if (budget !== undefined) body.token_budget = budget;
  });
  attempt(() => {
    const filter = readFilters();
    if (filter) body.filter = filter;
  });
  if ($("balance").value !== "none") body.balance = $("balance").value;
  if ($("aggregate").value !== "max") body.aggregate = $("aggregate").value;
  attempt(() => {
    const value = numberInput("max-similarity", "the max similarity", {
      check: (v) => (v <= -1 || v > 1 ? "must be above -1 and at most 1" : null),
    });
    if (value !== undefined) body.max_similarity = value;
  });
  if (avoid.examples.length) {
    body.avoid = avoid.examples;
    attempt(() => {
      const weight = numberInput("avoid-weight", "the avoid weight", {
        check: (v) => (v < 0 || v > 100 ? "must be between 0 and 100" : null),
      });
      if (weight !== undefined && weight !== 1) body.avoid_weight = weight;
    });
  }
  const boxes = [...$("checkpoint-choices").querySelectorAll("input[type=checkbox]")];
  const ticked = boxes.filter((b) => b.checked).map((b) => b.value);
  if (!ticked.length) errors.push("tick at least one checkpoint");
  else if (ticked.length < boxes.length) body.checkpoints = ticked;
  if ($("explain").checked) body.explain = true;
  return { body, errors };
}

function showErrors(listId, errors) {
  $(listId).replaceChildren(...errors.map((e) => h("li", {}, e)));
}

async function loadFile(inputId, textareaId) {
  const file = $(inputId).files[0];
  if (!file) return;
  $(textareaId).value = await file.text();
  const what = textareaId === "avoid" ? "avoid" : "targets";
  const parsed = parseExamples($(textareaId).value, what);
  showErrors(`${textareaId}-errors`, parsed.errors);
  setStatus(
    parsed.errors.length
      ? `${file.name}: ${parsed.errors.length} problem(s), listed under the text box.`
      : `${file.name}: ${parsed.examples.length} example(s) read.`,
    parsed.errors.length ? "error" : "ok",
  );
}

// -- running -----------------------------------------------------------------------------

async function run(event) {
  event.preventDefault();
  if (state.running || !state.summary) return;
  const { body, errors } = buildRequest();
  if (errors.length) {
    setStatus(`The selection was not sent: ${errors[0]}${errors.length > 1 ? ` (and ${errors.length - 1} more problem(s))` : ""}`, "error");
    return;
  }
  const name = state.summary.name;
  const mode = $("mode").value;
  const asJob = runsAsJob(mode, body, state.summary.n_examples);
  state.running = true;
  $("run").disabled = true;
  $("select-form").setAttribute("aria-busy", "true");
  try {
    if (asJob) await runJob(name, body);
    else await runSelect(name, body);
  } catch (error) {
    setStatus(describe(error, "The selection failed"), "error");
  } finally {
    state.running = false;
    $("run").disabled = false;
    $("select-form").removeAttribute("aria-busy");
  }
}

async function runSelect(name, body) {
  $("job").hidden = true;
  setStatus(`Selecting from ${name}…`);
  const started = performance.now();
  const answer = await api("POST", `/v1/datastores/${encodeURIComponent(name)}/select`, { body });
  const parts = [
    `${integer.format(answer.selected.length)} rows selected of ${integer.format(answer.n_candidates)} candidates`,
    answer.n_tokens != null ? `${integer.format(answer.n_tokens)} tokens` : null,
    `version ${answer.datastore_version}`,
    `gradients ${answer.timings.gradient_ms.toFixed(0)} ms, search ${answer.timings.search_ms.toFixed(0)} ms`,
    answer.cached ? "from the cache" : null,
  ];
  showResults(name, answer.selected, parts.filter(Boolean).join("; ") + ".");
  setStatus(`Selection done in ${((performance.now() - started) / 1000).toFixed(1)} s: ${answer.selected.length} rows.`, "ok");
}

function showJob(job) {
  const percent = Math.round(job.progress * 100);
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  $("job-state").textContent = job.status;
  $("job-progress").value = percent;
  $("job-progress").textContent = `${percent} %`;
  $("job-percent").textContent = `${percent} %`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function runJob(name, body) {
  setStatus(`Submitting a background job on ${name}…`);
  let job = await api("POST", `/v1/datastores/${encodeURIComponent(name)}/jobs`, { body });
  showJob(job);
  setStatus(`Job ${job.id} ${job.status}.`);
  while (job.status === "queued" || job.status === "running") {
    let wait = POLL_MS;
    try {
      job = await api("GET", `/v1/jobs/${encodeURIComponent(job.id)}`);
    } catch (error) {
      // Polling too fast for the team's polling bucket: wait as told, then go on.
      if (!(error instanceof ApiError && error.status === 429)) throw error;
      wait = (error.retryAfter || 1) * 1000;
    }
    showJob(job);
    if (job.status === "queued" || job.status === "running") await sleep(wait);
  }
  if (job.status === "failed") {
    const reason = job.error ? `${job.error.code}: ${job.error.message}` : "no reason given";
    setStatus(`Job ${job.id} failed: ${reason}`, "error");
    return;
  }
  setStatus(`Job ${job.id} succeeded; reading its result…`);
  const text = await api("GET", `/v1/jobs/${encodeURIComponent(job.id)}/result`, { as: "text" });
  const selected = parseResultLines(text);
  showResults(name, selected, `${integer.format(selected.length)} rows selected by job ${job.id}.`);
  setStatus(`Job ${job.id} done: ${selected.length} rows.`, "ok");
}

// -- results -----------------------------------------------------------------------------

function showResults(name, selected, summary) {
  state.result = { datastore: name, selected, explained: selected.some((r) => r.explanation) };
  state.shown = 0;
  $("results-summary").textContent = summary;
  $("results").tBodies[0].replaceChildren();
  $("results-section").hidden = false;
  $("download").disabled = !selected.length;
  $("histogram").replaceChildren(histogram(selected.map((r) => r.score)));
  drawBars();
  showMoreRows();
}

function metadataOf(row) {
  // n_tokens is filterable like a field but travels next to the metadata, not inside it.
  const explanation = row.explanation;
  if (!explanation) return {};
  return { ...explanation.metadata, n_tokens: explanation.n_tokens };
}

function drawBars() {
  if (!state.result) return;
  const field = $("group-by").value;
  const { selected, explained } = state.result;
  const box = $("bars");
  if (field && !explained) {
    box.replaceChildren(h("p", {}, `Metadata (${field}) comes with explanations: run with "Explain" ticked.`));
    return;
  }
  const counts = new Map();
  for (const row of selected) {
    const value = valueText(field ? metadataOf(row)[field] : row.subtask);
    counts.set(value, (counts.get(value) || 0) + 1);
  }
  box.replaceChildren(barChart(counts, field || "subtask"));
}

function showMoreRows() {
  const { selected } = state.result;
  const body = $("results").tBodies[0];
  const end = Math.min(selected.length, state.shown + PAGE_ROWS);
  for (let i = state.shown; i < end; i += 1) body.append(...resultRows(selected[i], i + 1));
  state.shown = end;
  const rest = selected.length - end;
  $("more").hidden = rest <= 0;
  $("more").textContent = `Show ${Math.min(rest, PAGE_ROWS)} more rows (${rest} not shown)`;
}

function resultRows(row, rank) {
  const ex = row.explanation;
  const metadata = Object.entries(metadataOf(row))
    .map(([k, v]) => `${k}=${valueText(v)}`)
    .join(", ");
  const detailId = `why-${rank}`;
  let button = "—";
  let detail = null;
  if (ex) {
    detail = h(
      "tr",
      { class: "detail", id: detailId, hidden: true },
      h("td", { colspan: 7 }, explanationView(row, ex)),
    );
    button = h(
      "button",
      {
        type: "button",
        class: "why",
        "aria-expanded": "false",
        "aria-controls": detailId,
        "aria-label": `Explain rank ${rank} (${row.id})`,
        onclick: (event) => {
          const open = detail.hidden;
          detail.hidden = !open;
          event.currentTarget.setAttribute("aria-expanded", String(open));
          event.currentTarget.textContent = open ? "Hide" : "Explain";
        },
      },
      "Explain",
    );
  }
  const main = h(
    "tr",
    { class: "result" },
    h("td", { class: "num" }, String(rank)),
    h("th", { scope: "row", class: "id" }, row.id),
    h("td", { class: "num", title: String(row.score) }, score(row.score)),
    h("td", {}, row.subtask ?? "—"),
    h("td", { class: "snippet" }, ex?.preview ?? "—"),
    h("td", { class: "meta" }, metadata || "—"),
    h("td", {}, button),
  );
  return detail ? [main, detail] : [main];
}

function explanationView(row, ex) {
  const ranked = row.subtask;
  const sum = ex.checkpoints.reduce((total, c) => total + c.score, 0);
  const parts = [
    h("h4", {}, `Per checkpoint (sums to ${score(sum)}${ranked != null ? `, the score under subtask ${ranked}` : ""})`),
    h(
      "table",
      { class: "grid small" },
      h("thead", {}, h("tr", {}, ...["Checkpoint", "Weight", "Contribution"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        {},
        ex.checkpoints.map((c) =>
          h("tr", {}, h("th", { scope: "row" }, c.checkpoint), h("td", { class: "num" }, c.weight.toFixed(4)), h("td", { class: "num" }, score(c.score))),
        ),
      ),
    ),
    h("h4", {}, "Per subtask"),
    h(
      "table",
      { class: "grid small" },
      h("thead", {}, h("tr", {}, ...["Subtask", "Score", "Ranked by"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        {},
        ex.subtasks.map((s) => {
          const winner = s.subtask === ranked;
          return h(
            "tr",
            { class: winner ? "winner" : undefined },
            h("th", { scope: "row" }, s.subtask),
            h("td", { class: "num" }, score(s.score)),
            h("td", {}, winner ? "★ this subtask" : ""),
          );
        }),
      ),
    ),
  ];
  const closest = ex.closest_target;
  const facts = [
    [
      "Closest target",
      `#${closest.index}${closest.id != null ? ` (${closest.id})` : ""}, subtask ${closest.subtask}, similarity ${score(closest.similarity)}`,
    ],
    ["Similarity to avoid examples", ex.avoid_similarity != null ? score(ex.avoid_similarity) : "— (no avoid examples)"],
    ["Tokens", ex.n_tokens != null ? integer.format(ex.n_tokens) : "—"],
  ];
  if (ex.preview) facts.push(["Preview", ex.preview]);
  parts.push(h("dl", { class: "facts" }, facts.flatMap(([t, d]) => [h("dt", {}, t), h("dd", {}, d)])));
  return h("div", { class: "explain" }, parts);
}

function download() {
  if (!state.result) return;
  const blob = new Blob([selectionJsonl(state.result.selected)], { type: "application/x-ndjson" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: `selection-${state.result.datastore}.jsonl`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000); // after the browser has taken it
  setStatus(`Downloaded ${state.result.selected.length} rows as JSONL.`, "ok");
}

// -- wiring ------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("key-forget").addEventListener("click", forgetKey);
  $("datastore").addEventListener("change", (e) => loadDatastore(e.target.value));
  $("datastore-refresh").addEventListener("click", loadDatastores);
  $("filter-add").addEventListener("click", addFilter);
  $("targets-file").addEventListener("change", () => loadFile("targets-file", "targets"));
  $("avoid-file").addEventListener("change", () => loadFile("avoid-file", "avoid"));
  $("select-form").addEventListener("submit", run);
  $("group-by").addEventListener("change", drawBars);
  $("more").addEventListener("click", showMoreRows);
  $("download").addEventListener("click", download);
  showKeyState();
  if (keyStore.get()) loadDatastores();
  document.body.dataset.ready = "true"; // the page's script is running (tests wait on it)
}

start();
