"""Real tasks from the OpenAI evals registry, converted into BIG-bench task folders.

The ``evals`` wheel on the package index (OpenAI evals, MIT licence; its ``LICENSE.md`` names
other licences for a few data sets, e.g. text_compression and steganography) ships about
470 eval data sets as JSONL at ``evals/registry/data/<task>/**/*.jsonl``. A record is
``{"input": <text or chat messages>, "ideal": <answer or list of acceptable answers>}``.

:func:`fetch_evals_registry` gets the wheel with ``pip download --no-deps`` (pip's own index
configuration, so a mirror is honoured; no host is written here), checks its sha256 against
a pinned value and converts every data set into the layout :mod:`demo.sources.tasks` reads
for BIG-bench: ``<cache>/openai_evals_tasks/<task>/task.json`` with
``{"name", "description", "keywords", "examples": [{"input", "target"}]}`` (a data set with
several files gets one subtask folder per file). The directory is published by rename with
a ``_source.json`` marker, so ``tasks.py`` / ``splits.py`` read it exactly like BIG-bench.
Nothing from the wheel is installed, imported or executed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from demo.sources._common import (
    SourceError,
    discard_dir,
    local_file,
    pinned_sha256,
    publish_dir,
    staging_dir,
)
from demo.sources.fetch import TASKS_MARKER
from indexer.fsutil import atomic_write_json

logger = logging.getLogger(__name__)

EVALS_PACKAGE = "evals"
EVALS_VERSION = "3.0.1.post1"
EVALS_WHEEL = f"{EVALS_PACKAGE}-{EVALS_VERSION}-py3-none-any.whl"
#: sha256 of ``evals-3.0.1.post1-py3-none-any.whl`` as published on PyPI (46,322,659 bytes).
EVALS_WHEEL_SHA256 = "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"
EVALS_TASKS_DIRNAME = "openai_evals_tasks"
#: Bumped when the conversion changes; a tasks directory of another version is converted again
#: and (through ``splits.json``'s source fingerprint) splits built from it are rebuilt.
CONVERSION_FORMAT_VERSION = 1
REGISTRY_DATA_PREFIX = "evals/registry/data/"
REGISTRY_EVALS_PREFIX = "evals/registry/evals/"
#: Only the first lines of a file are read: some files are huge (diabetes/samples.jsonl is
#: 170 MB) and the demo needs at most a few hundred examples of a task.
MAX_LINES_PER_FILE = 2000
#: A longer line is skipped without being parsed (no usable prompt is that long).
MAX_LINE_BYTES = 200_000
MAX_DESCRIPTION_CHARS = 600
#: Keyword on every converted task, so its origin shows in ``task.json``.
SOURCE_KEYWORD = "openai-evals"
#: Keywords for tasks that are not plain English (both are in ``tasks.EXCLUDED_KEYWORDS``).
NON_ENGLISH_KEYWORD = "non-English"
TRANSLATION_KEYWORD = "translation"
#: How many of a task's examples the non-ASCII letter check looks at.
LANGUAGE_SAMPLE_EXAMPLES = 200
#: At least this share of non-ASCII letters marks a task as not English (English prompts with
#: a few accented names stay well below; Polish, Icelandic or Vietnamese text is far above).
NON_ASCII_LETTER_SHARE = 0.02
#: Language names (and scripts) that, as a word of a task's name or description, mark it as
#: not plain English: many such tasks are in ASCII-only languages (Afrikaans, Dutch, Irish
#: lexicons) that the character check cannot catch. A few English tasks about a language
#: (e.g. chinese_zodiac) are excluded too; the pool has plenty of others.
LANGUAGE_WORDS = frozenset(
    """
    afrikaans albanian amharic arabic aramaic armenian azerbaijani basque belarusian bengali
    blackfoot brazilian bulgarian burmese canto cantonese catalan chinese coptic croatian
    cyrillic czech danish dutch elvish esperanto estonian faroese farsi filipino finnish
    french galician german greek gujarati hangul hawaiian hebrew hindi hiragana hungarian
    icelandic indonesian irish italian japanese kana kanji kannada katakana kazakh khmer
    klingon korean latin latvian lithuanian macedonian malay malayalam mandarin maori marathi
    mongolian nepali norwegian pali persian pinyin polish portuguese punjabi quenya romanian
    russian sanskrit serbian sindarin sinhala slovak slovenian spanish swahili swedish tagalog
    tamil telugu thai tibetan turkish ukrainian urdu uyghur uzbek vietnamese welsh xhosa
    yiddish yoruba zulu
    """.split()
)
TRANSLATION_WORDS = frozenset({"translate", "translation", "translations", "transliteration"})
PIP_DOWNLOAD_TIMEOUT_S = 900
READ_CHUNK_BYTES = 1 << 20
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_WORD = re.compile(r"[a-z]+")


class _Unusable(ValueError):
    """A record that cannot become an example; the message is the problem's category."""


@dataclass
class ConversionStats:
    """What :func:`convert_registry` read, wrote and dropped (mirrors ``_source.json``)."""

    tasks: int = 0
    examples: int = 0
    files_read: int = 0
    capped_files: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    skipped_tasks: dict[str, str] = field(default_factory=dict)
    not_english: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, sorted, for the marker file."""
        return {
            "tasks": self.tasks,
            "examples": self.examples,
            "files_read": self.files_read,
            "max_lines_per_file": MAX_LINES_PER_FILE,
            "capped_files": sorted(self.capped_files),
            "dropped_records": dict(sorted(self.dropped.items())),
            "skipped_tasks": dict(sorted(self.skipped_tasks.items())),
            "not_english": dict(sorted(self.not_english.items())),
        }


def is_converted(tasks_dir: Path) -> bool:
    """Whether ``tasks_dir`` holds a complete conversion of this format version."""
    marker = tasks_dir / TASKS_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("converter") == CONVERSION_FORMAT_VERSION


def fetch_evals_registry(
    cache_dir: Path,
    *,
    force: bool = False,
    wheel: Path | None = None,
    index_url: str | None = None,
    keep_wheel: bool = False,
    expected_sha256: str | None = EVALS_WHEEL_SHA256,
) -> Path:
    """Fetch the ``evals`` wheel once and convert its registry data into BIG-bench task folders.

    Args:
        cache_dir: Cache root; created if missing. Tasks go to ``cache_dir/openai_evals_tasks``.
        force: Download and convert again even if a complete conversion is there.
        wheel: Use this local ``evals-3.0.1.post1-py3-none-any.whl`` instead of downloading.
        index_url: Passed to pip as ``--index-url``; by default pip uses its own configuration.
        keep_wheel: Keep the downloaded wheel (46 MB) in ``cache_dir`` for later conversions.
        expected_sha256: Required sha256 of the wheel; ``None`` skips the check (tests).

    Returns:
        The tasks directory.

    Raises:
        ConfigError: ``wheel`` is given but is not a file.
        SourceError: pip cannot download the wheel, or it holds no registry data.
        IntegrityError: The wheel's sha256 differs from the pinned one.
    """
    cache_dir = Path(cache_dir)
    tasks_dir = cache_dir / EVALS_TASKS_DIRNAME
    if not force and is_converted(tasks_dir):
        logger.info("OpenAI evals tasks already converted at %s", tasks_dir)
        return tasks_dir
    wheel = local_file(wheel, "wheel")
    cache_dir.mkdir(parents=True, exist_ok=True)
    download_dir: Path | None = None
    if wheel is None and (cache_dir / EVALS_WHEEL).is_file():
        wheel = cache_dir / EVALS_WHEEL  # kept by an earlier keep_wheel=True
    try:
        if wheel is None:
            download_dir = Path(
                tempfile.mkdtemp(prefix=f".{EVALS_PACKAGE}-download.", dir=cache_dir)
            )
            wheel = _pip_download(download_dir, index_url)
        wheel_sha = pinned_sha256(wheel, expected_sha256)
        if download_dir is not None and keep_wheel:
            os.replace(wheel, cache_dir / EVALS_WHEEL)
            wheel = cache_dir / EVALS_WHEEL
        started = time.perf_counter()
        stats = _convert_and_publish(wheel, wheel_sha, tasks_dir)
    finally:
        if download_dir is not None:
            shutil.rmtree(download_dir, ignore_errors=True)
    logger.info(
        "converted %d OpenAI evals tasks (%d examples) in %.1f s to %s",
        stats.tasks,
        stats.examples,
        time.perf_counter() - started,
        tasks_dir,
    )
    return tasks_dir


def _convert_and_publish(wheel: Path, wheel_sha: str, tasks_dir: Path) -> ConversionStats:
    """Convert ``wheel`` into a staging directory, write the marker last, publish by rename."""
    staged = staging_dir(tasks_dir)
    try:
        stats = convert_registry(wheel, staged)
        atomic_write_json(
            staged / TASKS_MARKER,
            {
                # "sdist" / "sha256" are the keys splits.json's source fingerprint reads.
                "sdist": wheel.name,
                "sha256": wheel_sha,
                "converter": CONVERSION_FORMAT_VERSION,
                "package": EVALS_PACKAGE,
                "version": EVALS_VERSION,
                **stats.to_json(),
            },
        )
        publish_dir(staged, tasks_dir)
    except BaseException:
        discard_dir(staged)
        raise
    return stats


def _pip_download(dest: Path, index_url: str | None) -> Path:
    """``pip download --no-deps --only-binary :all: evals==<pinned>`` into ``dest``.

    ``--only-binary`` so pip never falls back to the sdist (which it would have to build to
    read its metadata); ``--no-deps`` because only the data files are wanted.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        f"{EVALS_PACKAGE}=={EVALS_VERSION}",
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    shown = f"pip download --no-deps {EVALS_PACKAGE}=={EVALS_VERSION}"
    logger.info("downloading %s with `%s` (46 MB)", EVALS_WHEEL, shown)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=PIP_DOWNLOAD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"`{shown}` took over {PIP_DOWNLOAD_TIMEOUT_S} s") from None
    except OSError as exc:
        raise SourceError(f"cannot run `{shown}`: {exc}") from exc
    if done.returncode != 0:
        raise SourceError(f"`{shown}` failed: {_pip_error_line(done.stderr)}")
    wheel = dest / EVALS_WHEEL
    if not wheel.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise SourceError(f"`{shown}` gave {got or 'nothing'}, not {EVALS_WHEEL}")
    logger.info(
        "downloaded %.0f MB in %.1f s", wheel.stat().st_size / 1e6, time.perf_counter() - started
    )
    return wheel


def _pip_error_line(stderr: str) -> str:
    """The line of pip's stderr that says what went wrong (its last ``ERROR:``, else the last)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no error output"])[-1]


def safe_name(raw: str) -> str:
    """A folder name ``tasks.py`` lists: odd characters become ``_``, no leading ``.``/``_``."""
    name = _UNSAFE_NAME_CHARS.sub("_", raw)
    return name if name and name[0] not in "._" else f"t{name}"


def convert_registry(wheel: Path, dest: Path) -> ConversionStats:
    """Convert every data set of the wheel's registry into task folders under ``dest``.

    Each ``evals/registry/data/<task>/`` becomes ``dest/<task>/task.json``; a task with
    several JSONL files gets a metadata-only ``task.json`` plus ``<task>/<file>/task.json``
    per file (subtask). Records that are not JSON objects with a text or chat ``input`` and
    a usable ``ideal`` are counted and dropped; only the first :data:`MAX_LINES_PER_FILE`
    lines of a file are read, and lines over :data:`MAX_LINE_BYTES` are skipped. A task
    whose file cannot be read (a damaged archive member) is skipped whole; a task with no
    usable example is not written. Tasks that are not plain English get a keyword of
    ``tasks.EXCLUDED_KEYWORDS`` so the pool's auto-pick leaves them out.

    Args:
        wheel: The ``evals`` wheel (a zip file).
        dest: An empty directory to write the task folders into.

    Returns:
        Counts of what was converted and dropped.

    Raises:
        SourceError: ``wheel`` is not a zip file or holds no registry data.
    """
    stats = ConversionStats()
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{wheel} is not a readable wheel (zip): {exc}") from exc
    with archive:
        by_task = _registry_files(archive)
        if not by_task:
            raise SourceError(f"{wheel} holds no {REGISTRY_DATA_PREFIX}<task>/*.jsonl files")
        descriptions = _registry_descriptions(archive)
        for raw_name, members in sorted(by_task.items()):
            _convert_task(archive, raw_name, members, descriptions.get(raw_name, ""), dest, stats)
    if stats.tasks == 0:
        raise SourceError(f"{wheel}: no registry task has a usable example")
    _log_summary(stats)
    return stats


def _registry_files(archive: zipfile.ZipFile) -> dict[str, list[zipfile.ZipInfo]]:
    """``evals/registry/data/<task>/**/*.jsonl`` members, grouped by ``<task>``."""
    by_task: dict[str, list[zipfile.ZipInfo]] = {}
    for info in archive.infolist():
        if info.is_dir() or not info.filename.startswith(REGISTRY_DATA_PREFIX):
            continue
        parts = PurePosixPath(info.filename[len(REGISTRY_DATA_PREFIX) :]).parts
        if len(parts) < 2 or not parts[-1].endswith(".jsonl") or ".." in parts:
            continue
        by_task.setdefault(parts[0], []).append(info)
    return by_task


def _registry_descriptions(archive: zipfile.ZipFile) -> dict[str, str]:
    """Data folder → the description of the eval(s) that read it, from the registry YAML.

    An eval entry names its data in ``args.samples_jsonl``; its description sits in the
    entry whose ``id`` is that eval. Descriptions only inform ``task.json`` and the language
    check, so without PyYAML (a dependency of transformers) or with a broken file there are
    simply fewer of them.
    """
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        logger.debug("PyYAML is not importable; converted tasks get no descriptions")
        return {}
    found: dict[str, list[str]] = {}
    for info in archive.infolist():
        name = info.filename
        if not name.startswith(REGISTRY_EVALS_PREFIX) or not name.endswith((".yaml", ".yml")):
            continue
        try:
            doc = yaml.safe_load(archive.read(info))
        except Exception as exc:  # a YAML error of any kind just loses one description
            logger.debug("skipping %s: %s", name, exc)
            continue
        if not isinstance(doc, dict):
            continue
        described = {
            v["id"]: v["description"].strip()
            for v in doc.values()
            if isinstance(v, dict)
            and isinstance(v.get("id"), str)
            and isinstance(v.get("description"), str)
            and v["description"].strip()
        }
        for key, entry in doc.items():
            args = entry.get("args") if isinstance(entry, dict) else None
            data = args.get("samples_jsonl") if isinstance(args, dict) else None
            if isinstance(data, str) and key in described:
                folder = PurePosixPath(data).parts[0] if PurePosixPath(data).parts else ""
                texts = found.setdefault(folder, [])
                if described[key] not in texts:
                    texts.append(described[key])
    return {k: " ".join(v)[:MAX_DESCRIPTION_CHARS] for k, v in found.items()}


def _convert_task(
    archive: zipfile.ZipFile,
    raw_name: str,
    members: list[zipfile.ZipInfo],
    description: str,
    dest: Path,
    stats: ConversionStats,
) -> None:
    """Read one data folder's files and write its task folder (or record why not)."""
    name = safe_name(raw_name)
    if (dest / name).exists():
        stats.skipped_tasks[raw_name] = f"folder name {name} is taken by another task"
        return
    prefix = f"{REGISTRY_DATA_PREFIX}{raw_name}/"
    files: list[tuple[str, list[dict[str, Any]]]] = []
    dropped: Counter[str] = Counter()
    for info in sorted(members, key=lambda i: i.filename):
        rel = info.filename[len(prefix) :]
        try:
            examples, capped = _read_examples(archive, info, dropped)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            stats.skipped_tasks[raw_name] = f"cannot read {rel}: {exc}"
            logger.warning("skipping task %s: cannot read %s: %s", raw_name, rel, exc)
            return
        stats.files_read += 1
        if capped:
            stats.capped_files.append(f"{raw_name}/{rel}")
        if examples:
            files.append((safe_name(rel.removesuffix(".jsonl").replace("/", "__")), examples))
    stats.dropped.update(dropped)
    if dropped:
        logger.debug("%s: dropped records %s", raw_name, dict(dropped))
    if not files:
        stats.skipped_tasks[raw_name] = f"no usable example ({dict(dropped) or 'empty files'})"
        return
    keywords = [SOURCE_KEYWORD]
    problem = _language_problem(raw_name, description, [e for _, ex in files for e in ex])
    if problem is not None:
        keyword, reason = problem
        keywords.append(keyword)
        stats.not_english[name] = reason
    head = {"name": name, "description": description, "keywords": keywords}
    source = {"package": EVALS_PACKAGE, "version": EVALS_VERSION, "data": prefix}
    if len(files) == 1:
        _write_json(dest / name / "task.json", {**head, "examples": files[0][1], "source": source})
    else:
        _write_json(dest / name / "task.json", {**head, "examples": [], "source": source})
        for sub, examples in files:
            _write_json(dest / name / sub / "task.json", {"name": sub, "examples": examples})
    stats.tasks += 1
    stats.examples += sum(len(ex) for _, ex in files)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compact: the files are read by code, and the cache is about a quarter smaller.
    path.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_examples(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, dropped: Counter[str]
) -> tuple[list[dict[str, Any]], bool]:
    """The usable examples among a file's first :data:`MAX_LINES_PER_FILE` non-blank lines,
    and whether the file was capped (more lines followed). The file is read lazily, so a
    huge one costs only the part that is read."""
    examples: list[dict[str, Any]] = []
    n_lines = 0
    with archive.open(info) as stream:
        for line in _lines(stream):
            if line is not None and not line.strip():
                continue
            if n_lines == MAX_LINES_PER_FILE:
                return examples, True
            n_lines += 1
            if line is None:
                dropped["line too long"] += 1
                continue
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                dropped["not JSON"] += 1
                continue
            try:
                examples.append(example_from_record(record))
            except _Unusable as exc:
                dropped[str(exc)] += 1
    return examples, False


def _lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of ``stream``, split at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (some registry
    files end lines with ``\\r`` only; a JSON record never holds a raw line break); None
    for a line over :data:`MAX_LINE_BYTES`, which is skipped without being kept whole."""
    buffer = b""
    too_long = False
    while chunk := stream.read(READ_CHUNK_BYTES):
        *complete, buffer = _LINE_BREAK.split(buffer + chunk)
        for line in complete:
            yield None if too_long else line
            too_long = False
        if len(buffer) > MAX_LINE_BYTES:
            buffer, too_long = b"", True
    if too_long or buffer:
        yield None if too_long else buffer


def example_from_record(record: Any) -> dict[str, Any]:
    """A registry record as a BIG-bench example ``{"input": str, "target": str | list[str]}``.

    Raises:
        _Unusable: With the problem's category as the message.
    """
    if not isinstance(record, dict):
        raise _Unusable("not a JSON object")
    if "input" not in record:
        raise _Unusable("no input")
    return {"input": input_text(record["input"]), "target": _target(record.get("ideal"))}


def input_text(value: Any) -> str:
    """The prompt text of an ``input``: a string as is, chat messages joined.

    System and user turns are joined by blank lines (a system turn is the task's
    instruction, as BIG-bench's ``task_prefix`` would be). When the chat holds few-shot
    turns (an ``assistant`` turn, or system turns named ``example_user`` /
    ``example_assistant``), those turns and the final question are written as
    ``User: ...`` / ``Assistant: ...`` so the example answers stay recognisable.

    Raises:
        _Unusable: Not text, not a list of ``{"role", "content": str}``, or empty.
    """
    if isinstance(value, str):
        if not value.strip():
            raise _Unusable("empty input")
        return value.strip()
    if not isinstance(value, list) or not value:
        raise _Unusable("input is neither text nor chat messages")
    turns: list[tuple[str, str, str]] = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise _Unusable("chat message without text content")
        role, who = str(message.get("role", "")), str(message.get("name", ""))
        turns.append((role, who, message["content"].strip()))
    few_shot = any(r == "assistant" or w.startswith("example_") for r, w, _ in turns)
    parts: list[str] = []
    for role, who, content in turns:
        if not content:
            continue
        if not few_shot or (role == "system" and not who):
            parts.append(content)
        else:
            speaker = "Assistant" if role == "assistant" or who == "example_assistant" else "User"
            parts.append(f"{speaker}: {content}")
    if not parts:
        raise _Unusable("empty input")
    return "\n\n".join(parts)


def _target(ideal: Any) -> str | list[str]:
    """``ideal`` as a target: a string, or the list of acceptable answers (non-empty ones)."""
    if isinstance(ideal, (int, float)) and not isinstance(ideal, bool):
        return str(ideal)
    if isinstance(ideal, str) and ideal.strip():
        return ideal
    if isinstance(ideal, list):
        answers = [
            str(a)
            for a in ideal
            if (isinstance(a, str) and a.strip())
            or (isinstance(a, (int, float)) and not isinstance(a, bool))
        ]
        if answers:
            return answers
    raise _Unusable("no usable ideal")


def _language_problem(
    name: str, description: str, examples: list[dict[str, Any]]
) -> tuple[str, str] | None:
    """(keyword, why) if the task is not plain English, else None.

    A language name or "translation" in the task's name or description, or a share of
    non-ASCII letters of at least :data:`NON_ASCII_LETTER_SHARE` in its first examples.
    """
    words = set(_WORD.findall(f"{name.replace('_', ' ')} {description}".lower()))
    languages = sorted(words & LANGUAGE_WORDS)
    if languages:
        return NON_ENGLISH_KEYWORD, f"name/description says {', '.join(languages)}"
    if words & TRANSLATION_WORDS:
        return TRANSLATION_KEYWORD, "name/description says translation"
    text = io.StringIO()
    for example in examples[:LANGUAGE_SAMPLE_EXAMPLES]:
        target = example["target"]
        text.write(example["input"])
        text.write(" ".join(target) if isinstance(target, list) else target)
    letters = [c for c in text.getvalue() if c.isalpha()]
    if letters:
        share = sum(not c.isascii() for c in letters) / len(letters)
        if share >= NON_ASCII_LETTER_SHARE:
            return NON_ENGLISH_KEYWORD, f"{share:.0%} of letters are non-ASCII"
    return None


def _log_summary(stats: ConversionStats) -> None:
    capped = stats.capped_files
    logger.info(
        "read %d files of %d tasks; %d files capped at their first %d lines%s",
        stats.files_read,
        stats.tasks + len(stats.skipped_tasks),
        len(capped),
        MAX_LINES_PER_FILE,
        f" (e.g. {', '.join(sorted(capped)[:3])})" if capped else "",
    )
    if stats.dropped:
        logger.info("dropped records: %s", dict(stats.dropped.most_common()))
    if stats.skipped_tasks:
        logger.info(
            "skipped %d tasks with no usable example or an unreadable file (e.g. %s)",
            len(stats.skipped_tasks),
            ", ".join(sorted(stats.skipped_tasks)[:5]),
        )
    logger.info(
        "marked %d of %d tasks as not plain English (never auto-picked for the pool)",
        len(stats.not_english),
        stats.tasks,
    )
