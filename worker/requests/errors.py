"""Errors a job can end with, in one structured shape.

A failed job's `error` is a JSON string (the runpod SDK sends errors as strings) of
{"type", "message", "fields": [{"field", "problem"}], "fix"}: clients can parse it, people can read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pydantic import ValidationError


@dataclass
class FieldProblem:
    field: str
    problem: str


@dataclass
class JobError(Exception):
    """A job failed for a reason the caller should see; the worker itself is fine."""

    type: str
    message: str
    fix: str = ""
    fields: list[FieldProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    def as_job_output(self) -> dict[str, str]:
        return {"error": self.to_json()}


def invalid_input(field_name: str, problem: str, fix: str = "") -> JobError:
    return JobError(
        type="invalid_input",
        message=f"{field_name}: {problem}",
        fix=fix,
        fields=[FieldProblem(field_name, problem)],
    )


def from_validation_error(error: ValidationError, *, prefix: str = "input") -> JobError:
    """One JobError listing every field pydantic rejected, named by its path in the job input."""
    by_field: dict[str, list[str]] = {}
    for item in error.errors():
        # A union field fails once per branch: join them into one problem for that field.
        by_field.setdefault(_field_path(prefix, item["loc"]), []).append(_describe(item))
    problems = [FieldProblem(name, " or ".join(dict.fromkeys(found))) for name, found in by_field.items()]
    return JobError(
        type="invalid_input",
        message="; ".join(f"{p.field}: {p.problem}" for p in problems),
        fix="Correct the fields above; see the README's job input section for what each field takes.",
        fields=problems,
    )


def _field_path(prefix: str, loc: tuple) -> str:
    path = prefix
    for part in loc:
        # Union branches ("str", "list[str]") and function-validator tags are not fields.
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "list[str]", "int", "float", "bool", "none") or "[" in str(part) or "-" in str(part):
            continue
        else:
            path += f".{part}"
    return path


def _describe(item: dict) -> str:
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        return "unknown field"
    if item["type"] == "missing":
        return "required field is missing"
    if "input" in item and item["type"] not in ("extra_forbidden",):
        shown = repr(item["input"])
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{message} (got {shown})"
    return message
