// Target-example JSONL, checked line by line in the browser before anything is sent.
//
// The rules are the wire contract's (less_wire.models.TargetExample) and the messages follow
// the SDK's loader (less_wire.files.load_targets_jsonl): "line N: invalid JSON: ...", blank
// lines skipped, keys other than the target fields ignored (so pool rows can be pasted as
// they are). The server checks everything again; this only saves a round trip and names the
// line, which the server cannot (it sees a list).

const TARGET_FIELDS = ["id", "messages", "prompt", "completion", "subtask"];
const ROLES = new Set(["system", "user", "assistant"]);
const MAX_ERRORS_SHOWN = 10;

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "list";
  return typeof value === "object" ? "object" : typeof value;
}

// The text rule of the wire contract: no NUL, no lone surrogate.
function textProblem(value) {
  if (typeof value !== "string") return `must be a string, not ${typeName(value)}`;
  if (value.includes("\u0000")) return "must not contain NUL characters";
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?:[^\ud800-\udbff]|^)[\udc00-\udfff]/.test(value)) {
    return "must be valid Unicode text (it contains a lone surrogate)";
  }
  return null;
}

// Problems of one parsed row as a target example; [] when it is valid.
function exampleProblems(row) {
  const problems = [];
  for (const key of ["id", "prompt", "completion", "subtask"]) {
    if (row[key] === undefined || row[key] === null) continue;
    const problem = textProblem(row[key]);
    if (problem) problems.push(`'${key}' ${problem}`);
  }
  const hasChat = row.messages !== undefined && row.messages !== null;
  const hasPair = (row.prompt ?? null) !== null || (row.completion ?? null) !== null;
  if (hasChat) {
    if (!Array.isArray(row.messages)) {
      problems.push(`'messages' must be a list, not ${typeName(row.messages)}`);
    } else {
      row.messages.forEach((message, i) => {
        if (typeName(message) !== "object") {
          problems.push(`'messages[${i}]' must be an object with role and content`);
          return;
        }
        if (!ROLES.has(message.role)) {
          problems.push(`'messages[${i}].role' must be one of system, user, assistant`);
        }
        const problem = textProblem(message.content);
        if (problem) problems.push(`'messages[${i}].content' ${problem}`);
        const extra = Object.keys(message).filter((k) => k !== "role" && k !== "content");
        if (extra.length) problems.push(`'messages[${i}]' has unknown keys: ${extra.join(", ")}`);
      });
    }
  }
  if (problems.length) return problems;
  if (hasChat && hasPair) return ["give either 'messages' or 'prompt' and 'completion', not both"];
  if (hasChat) {
    const answered = row.messages.some(
      (m) => m.role === "assistant" && m.content.trim() !== "",
    );
    if (!answered) return ["'messages' needs at least one assistant turn with non-empty content"];
  } else if (typeof row.prompt !== "string" || typeof row.completion !== "string") {
    return ["give either 'messages' or both 'prompt' and 'completion'"];
  } else if (row.completion.trim() === "") {
    return ["'completion' must not be empty"];
  }
  return [];
}

/**
 * Parses JSONL text into target examples.
 *
 * @param {string} text the pasted or uploaded file
 * @param {string} what how messages name the input ("targets", "avoid")
 * @returns {{examples: object[], errors: string[]}} the examples (target fields only, in line
 *   order) and the problems, each naming its line; errors past the first few are counted
 */
export function parseExamples(text, what) {
  const examples = [];
  const errors = [];
  let hidden = 0;
  const report = (message) => {
    if (errors.length < MAX_ERRORS_SHOWN) errors.push(message);
    else hidden += 1;
  };
  text.split(/\r\n|\n|\r/).forEach((line, index) => {
    const lineno = index + 1;
    if (line.trim() === "") return;
    let row;
    try {
      row = JSON.parse(line);
    } catch (error) {
      report(`${what} line ${lineno}: invalid JSON: ${error.message}`);
      return;
    }
    if (typeName(row) !== "object") {
      report(`${what} line ${lineno}: expected a JSON object, got ${typeName(row)}`);
      return;
    }
    const problems = exampleProblems(row);
    if (problems.length) {
      report(`${what} line ${lineno}: invalid target example: ${problems.join("; ")}`);
      return;
    }
    const example = {};
    for (const key of TARGET_FIELDS) {
      if (row[key] !== undefined && row[key] !== null) example[key] = row[key];
    }
    examples.push(example);
  });
  if (hidden) errors.push(`… and ${hidden} more problem(s)`);
  if (!errors.length && !examples.length) errors.push(`${what}: no examples`);
  return { examples, errors };
}

/**
 * The selection-file text of selected rows: one `{rank, id, score, subtask, explanation?}`
 * JSON object per line, best first, as less_wire.files writes it (explanation only when the
 * rows carry one).
 */
export function selectionJsonl(selected) {
  return selected
    .map((row, i) => {
      const record = { rank: i + 1, id: row.id, score: row.score, subtask: row.subtask };
      if (row.explanation) record.explanation = row.explanation;
      return JSON.stringify(record) + "\n";
    })
    .join("");
}

/** Rows of a job's JSONL result (one SelectedExample per line). */
export function parseResultLines(text) {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line));
}
