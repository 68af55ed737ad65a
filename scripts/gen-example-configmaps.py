#!/usr/bin/env python3
"""Generate the ConfigMaps that ship the example corpora and training datasets.

For each example case (examples/<case>/):
  corpus/*.md          -> examples/<case>/corpus-configmap.yaml   (ConfigMap <case>-corpus, one key per file)
  dataset/train.jsonl  -> examples/<case>/dataset-configmap.yaml  (ConfigMap <case>-dataset, key train.jsonl)

Before writing anything it validates the sources (corpus documents, train.jsonl, qa.jsonl) and
reports every problem as file:line. With --check it writes nothing and exits 1 when a source is
invalid or a generated file is stale.

Standard library only: the YAML is written by hand, every value as a block scalar, so the output is
byte-for-byte deterministic and reviewable in diffs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"

# Kubernetes rejects objects over 1 MiB; stay well under so metadata and annotations fit too.
MAX_CONFIGMAP_BYTES = 900 * 1024
# ConfigMap data keys must be valid file names of this shape (apimachinery IsConfigMapKey).
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CITATION = re.compile(r"\[(\d+)\]")
CONTEXT_PASSAGE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)

FINANCE_DISCLAIMER = "This is general information, not personal investment advice."
CLINICAL_MARKER = "Synthetic guideline for software testing; not medical advice."
SOAP_PREFIXES = ("S: ", "O: ", "A: ", "P: ")


@dataclass(frozen=True)
class Case:
    """What one example must look like; the numbers are the content rules in examples/<case>/README.md."""

    name: str
    doc_words: tuple[int, int]
    answer_words: tuple[int, int]
    # A line every corpus document must start with, before its `# Title` heading.
    doc_marker: str | None = None


CASES = (
    Case(name="finance", doc_words=(250, 700), answer_words=(40, 120)),
    Case(name="clinical", doc_words=(250, 600), answer_words=(50, 120), doc_marker=CLINICAL_MARKER),
)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)

    def error(self, path: Path, line: int | None, message: str) -> None:
        where = rel(path) if line is None else f"{rel(path)}:{line}"
        self.errors.append(f"{where}: {message}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_text(path: Path, report: Report) -> str | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        report.error(path, None, f"not valid UTF-8: {err}")
        return None
    if "\r" in text:
        report.error(path, None, "contains carriage returns; use LF line endings")
        return None
    for lineno, line in enumerate(text.split("\n"), 1):
        bad = [c for c in line if (ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F or c in "\ufeff\u2028\u2029"]
        if bad:
            report.error(path, lineno, f"control character {bad[0]!r} cannot be carried in a YAML block scalar")
            return None
    return text


# ---------------------------------------------------------------------------------------------
# Validation


def validate_corpus(case: Case, corpus_dir: Path, report: Report) -> dict[str, str]:
    docs: dict[str, str] = {}
    paths = sorted(corpus_dir.glob("*.md"))
    if not paths:
        report.error(corpus_dir, None, "no *.md documents")
    for path in paths:
        text = read_text(path, report)
        if text is None:
            continue
        if not CONFIGMAP_KEY.match(path.name):
            report.error(path, None, "file name is not a valid ConfigMap key ([-._a-zA-Z0-9]+)")
        if not text.endswith("\n"):
            report.error(path, None, "must end with a newline")
        lines = text.split("\n")
        title_index = 0
        if case.doc_marker is not None:
            if lines[0] != case.doc_marker:
                report.error(path, 1, f'first line must be exactly "{case.doc_marker}"')
            title_index = next((i for i, line in enumerate(lines[1:], 1) if line.strip()), 1)
        if not lines[title_index].startswith("# "):
            report.error(path, title_index + 1, "expected the document title as a `# Title` heading")
        if not any(line.startswith("## ") for line in lines):
            report.error(path, None, "expected at least one `## Section` heading")
        words = len(text.split())
        lo, hi = case.doc_words
        if not lo <= words <= hi:
            report.error(path, None, f"{words} words; documents in this example have {lo}-{hi}")
        docs[path.name] = text
    return docs


def parse_jsonl(path: Path, report: Report) -> list[tuple[int, dict]]:
    text = read_text(path, report)
    if text is None:
        return []
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            if lineno != len(text.split("\n")):
                report.error(path, lineno, "blank line; JSONL has one JSON object per line")
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            report.error(path, lineno, f"invalid JSON: {err.msg} (column {err.colno})")
            continue
        if not isinstance(value, dict):
            report.error(path, lineno, "expected a JSON object")
            continue
        rows.append((lineno, value))
    if not text.endswith("\n"):
        report.error(path, None, "must end with a newline")
    return rows


def context_passages(user: str) -> set[int]:
    """Passage numbers offered in a user message that starts with `Context:` and `[n] ...` lines."""
    if not user.startswith("Context:"):
        return set()
    return {int(n) for n in CONTEXT_PASSAGE.findall(user)}


def check_citations(path: Path, lineno: int, user: str, answer: str, report: Report) -> None:
    offered = context_passages(user)
    cited = {int(n) for n in CITATION.findall(answer)}
    if offered and not cited:
        report.error(path, lineno, "context passages are given but the assistant cites none as [n]")
    for n in sorted(cited - offered):
        report.error(path, lineno, f"assistant cites [{n}] but the context has no passage [{n}]")


def check_finance_answer(path: Path, lineno: int, answer: str, report: Report) -> None:
    last_line = answer.split("\n")[-1]
    if last_line != FINANCE_DISCLAIMER:
        report.error(path, lineno, f'assistant answer must end with the line "{FINANCE_DISCLAIMER}"')
    elif answer.count(FINANCE_DISCLAIMER) > 1:
        report.error(path, lineno, "the disclaimer must appear exactly once, as the last line")


def check_clinical_answer(path: Path, lineno: int, answer: str, report: Report) -> None:
    lines = answer.split("\n")
    if len(lines) != 4:
        report.error(path, lineno, f"SOAP note must be exactly 4 lines (S:, O:, A:, P:), found {len(lines)}")
        return
    for line, prefix in zip(lines, SOAP_PREFIXES):
        if not line.startswith(prefix) or not line[len(prefix):].strip():
            report.error(path, lineno, f'line "{line[:20]}..." must start with "{prefix}" followed by text')


def validate_train(case: Case, path: Path, report: Report) -> tuple[list[tuple[int, dict]], dict[int, str]]:
    """Returns the parsed rows and, by line number, the assistant answers that passed every rule."""
    rows = parse_jsonl(path, report)
    valid_answers: dict[int, str] = {}
    if not rows and path.exists():
        report.error(path, None, "no training examples")
    system_prompts: dict[str, int] = {}
    for lineno, row in rows:
        messages = row.get("messages")
        if not isinstance(messages, list) or [m.get("role") if isinstance(m, dict) else None for m in messages] != [
            "system",
            "user",
            "assistant",
        ]:
            report.error(path, lineno, 'expected "messages": [system, user, assistant], in that order')
            continue
        contents = [m.get("content") for m in messages]
        if not all(isinstance(c, str) and c.strip() for c in contents):
            report.error(path, lineno, "every message needs a non-empty string content")
            continue
        system, user, answer = contents
        system_prompts.setdefault(system, lineno)
        errors_before = len(report.errors)
        if answer != answer.strip():
            report.error(path, lineno, "assistant answer has leading or trailing whitespace")
        words = len(answer.split())
        lo, hi = case.answer_words
        if not lo <= words <= hi:
            report.error(path, lineno, f"assistant answer has {words} words; this example uses {lo}-{hi}")
        check_citations(path, lineno, user, answer, report)
        if case.name == "finance":
            check_finance_answer(path, lineno, answer, report)
        elif case.name == "clinical":
            check_clinical_answer(path, lineno, answer, report)
        if len(report.errors) == errors_before:
            valid_answers[lineno] = answer
    if len(system_prompts) > 1:
        first, *others = system_prompts.values()
        report.error(path, others[0], f"system prompt differs from the one on line {first}; use one prompt")
    return rows, valid_answers


def validate_qa(
    path: Path, doc_stems: set[str], train_rows: list[tuple[int, dict]], train_answers: dict[int, str], report: Report
) -> int:
    rows = parse_jsonl(path, report)
    train_users = [
        " ".join(m["content"].split()).lower()
        for _, row in train_rows
        for m in row.get("messages", [])
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    train_path = path.with_name("train.jsonl")
    checked_patterns: set[str] = set()
    seen_ids: dict[str, int] = {}
    for lineno, row in rows:
        missing = [k for k in ("id", "question", "answer", "supporting_documents", "format") if k not in row]
        if missing:
            report.error(path, lineno, f"missing keys: {', '.join(missing)}")
            continue
        qid, question, answer = row["id"], row["question"], row["answer"]
        if not all(isinstance(v, str) and v.strip() for v in (qid, question, answer)):
            report.error(path, lineno, "id, question and answer must be non-empty strings")
            continue
        if qid in seen_ids:
            report.error(path, lineno, f'duplicate id "{qid}" (first on line {seen_ids[qid]})')
        seen_ids.setdefault(qid, lineno)
        docs = row["supporting_documents"]
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            report.error(path, lineno, "supporting_documents must be a non-empty list of corpus file stems")
        else:
            for doc in docs:
                if doc not in doc_stems:
                    report.error(path, lineno, f'supporting document "{doc}" is not a file in corpus/ (use the stem)')
        normalized = " ".join(question.split()).lower()
        if any(normalized in user for user in train_users):
            report.error(path, lineno, "question also appears in train.jsonl; QA items must be held out")
        fmt = row["format"]
        if not isinstance(fmt, dict) or not isinstance(fmt.get("regex"), str):
            report.error(path, lineno, 'format must be {"regex": "..."}')
            continue
        if fmt["regex"] in checked_patterns:
            continue
        checked_patterns.add(fmt["regex"])
        try:
            # Python's re agrees with the Rust regex crate on the constructs these patterns use,
            # except that Python's `$` also matches before a final newline; trimmed answers have none.
            pattern = re.compile(fmt["regex"])
        except re.error as err:
            report.error(path, lineno, f"format.regex does not compile: {err}")
            continue
        # The eval matches the trimmed answer, and Rust's `$` (no flags) is only the end of the text.
        for train_line, answer_text in train_answers.items():
            if not pattern.search(answer_text.strip()):
                report.error(path, lineno, f"format.regex rejects the answer on {rel(train_path)}:{train_line}; "
                                           "training would teach a format the eval does not accept")
                break
    return len(rows)


# ---------------------------------------------------------------------------------------------
# Rendering


def block_scalar(text: str, parent_indent: int, step: int = 2) -> str:
    """A YAML literal block scalar whose value is exactly `text`, for a key indented `parent_indent`."""
    if text.endswith("\n\n") or text == "\n":
        chomp = "+"
    elif text.endswith("\n"):
        chomp = ""
    else:
        chomp = "-"
    # Without an explicit indentation indicator (relative to the parent), a first line that starts
    # with a space would be read as deeper indentation and lose its leading spaces.
    first_content = next((line for line in text.split("\n") if line), "")
    indicator = str(step) if first_content.startswith(" ") else ""
    indent = " " * (parent_indent + step)
    body = text[:-1] if text.endswith("\n") else text
    lines = [indent + line if line else "" for line in body.split("\n")]
    return f"|{indicator}{chomp}\n" + "\n".join(lines) + "\n"


def render_configmap(name: str, source: str, data: dict[str, str]) -> str:
    out = [
        f"# Generated by scripts/gen-example-configmaps.py from {source}; do not edit.\n",
        "apiVersion: v1\n",
        "kind: ConfigMap\n",
        "metadata:\n",
        f"  name: {name}\n",
        "data:\n",
    ]
    for key in sorted(data):
        out.append(f"  {key}: {block_scalar(data[key], parent_indent=2)}")
    return "".join(out)


# ---------------------------------------------------------------------------------------------


def build(case: Case, report: Report) -> tuple[dict[Path, str], str]:
    root = EXAMPLES / case.name
    corpus_dir, train_path, qa_path = root / "corpus", root / "dataset" / "train.jsonl", root / "dataset" / "qa.jsonl"
    outputs: dict[Path, str] = {}

    docs = validate_corpus(case, corpus_dir, report)
    for path in (train_path, qa_path):
        if not path.exists():
            report.error(path, None, "missing")
    train_rows, train_answers = validate_train(case, train_path, report) if train_path.exists() else ([], {})
    stems = {Path(n).stem for n in docs}
    qa_count = validate_qa(qa_path, stems, train_rows, train_answers, report) if qa_path.exists() else 0

    if docs:
        outputs[root / "corpus-configmap.yaml"] = render_configmap(f"{case.name}-corpus", "corpus/", docs)
    if train_path.exists():
        train_text = read_text(train_path, report)
        if train_text is not None:
            outputs[root / "dataset-configmap.yaml"] = render_configmap(
                f"{case.name}-dataset", "dataset/train.jsonl", {"train.jsonl": train_text}
            )
    for path, text in outputs.items():
        size = len(text.encode("utf-8"))
        if size > MAX_CONFIGMAP_BYTES:
            report.error(path, None, f"{size} bytes; ConfigMaps must stay under {MAX_CONFIGMAP_BYTES} (API limit 1 MiB)")
    summary = f"{case.name}: {len(docs)} documents, {len(train_rows)} training examples, {qa_count} QA items"
    return outputs, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="validate sources and fail if a generated file is stale; write nothing")
    args = parser.parse_args()

    report = Report()
    outputs: dict[Path, str] = {}
    summaries = []
    for case in CASES:
        case_outputs, summary = build(case, report)
        outputs.update(case_outputs)
        summaries.append(summary)

    if report.errors:
        for err in report.errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"{len(report.errors)} error(s) in the example sources; nothing was written", file=sys.stderr)
        return 1

    stale = []
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel(path)}")
    if stale:
        for path in stale:
            print(f"error: {rel(path)} is stale or missing; run `make generate`", file=sys.stderr)
        return 1
    for summary in summaries:
        print(f"ok: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
