"""Workflow files: YAML -> ``Workflow``, and start-up loading of the built-ins plus a directory.

``load_workflows(directory)`` is what the server runs at start-up: every built-in
(``pipelines/workflow/builtin/*.yaml``) and every ``*.yaml`` / ``*.yml`` in ``directory``, each
parsed and validated; any problem anywhere raises one ``WorkflowFileError`` listing them all. A
user file may not reuse a built-in's name (the public APIs' meaning of ``chat`` would change
silently) nor another file's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipelines.workflow.spec import INPUTS, InputSpec, OutputRef, Problem, Ref, Step, Workflow
from pipelines.workflow.types import NEVER, TypeParseError, conforms, parse_type
from pipelines.workflow.validate import validate_workflow

BUILTIN_DIR = Path(__file__).with_name("builtin")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REF = re.compile(r"^\$(?P<step>[A-Za-z_][A-Za-z0-9_]*)\.(?P<output>[A-Za-z_][A-Za-z0-9_]*)$")
WORKFLOW_KEYS = {"name", "description", "inputs", "steps", "outputs"}
STEP_KEYS = {"name", "op", "with", "fan_out", "timeout_s", "description"}
INPUT_KEYS = {"type", "default", "optional", "description"}


class WorkflowFileError(ValueError):
    """One or more workflow files are invalid; ``problems`` holds every one (file, where, what)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("invalid workflow files:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems

    def __reduce__(self):  # keep the problems when Ray pickles the exception across processes
        return (type(self), (self.problems,))


def load_workflows(directory: Path | None = None) -> dict[str, Workflow]:
    """Built-ins + every YAML file in ``directory`` (None: built-ins only), by workflow name.

    Raises WorkflowFileError listing every problem of every file."""
    problems: list[Problem] = []
    workflows: dict[str, Workflow] = {}
    files = [(path, True) for path in _yaml_files(BUILTIN_DIR)]
    if directory is not None:
        if not Path(directory).is_dir():
            raise WorkflowFileError([Problem(str(directory), "workflows_dir", "is not a directory")])
        files += [(path, False) for path in _yaml_files(Path(directory))]
    for path, builtin in files:
        workflow, file_problems = load_file(path, builtin=builtin)
        problems += file_problems
        if workflow is None:
            continue
        if workflow.name in workflows:
            earlier = workflows[workflow.name]
            what = "built-in" if earlier.builtin else "workflow"
            problems.append(Problem(str(path), "name", f"{workflow.name!r} is already the name of the {what} "
                                    f"in {earlier.source}; choose another name"))  # fmt: skip
            continue
        workflows[workflow.name] = workflow
    if problems:
        raise WorkflowFileError(problems)
    return workflows


def check_file(path: Path) -> tuple[Workflow | None, list[Problem]]:
    """``load_file`` plus what start-up would also refuse: a name a built-in already has
    (``triptych workflow validate``)."""
    workflow, problems = load_file(path)
    builtin = next((b for b in _builtin_sources() if b.name == getattr(workflow, "name", None)), None)
    if workflow is not None and builtin is not None and Path(builtin.source).resolve() != Path(path).resolve():
        problems.append(Problem(str(path), "name", f"{workflow.name!r} is already the name of the built-in in "
                                f"{builtin.source}; choose another name"))  # fmt: skip
        return None, problems
    return workflow, problems


def _builtin_sources() -> list[Workflow]:
    return [w for path in _yaml_files(BUILTIN_DIR) if (w := load_file(path, builtin=True)[0]) is not None]


def load_file(path: Path, *, builtin: bool = False) -> tuple[Workflow | None, list[Problem]]:
    """Parse and validate one file: (the workflow, or None when it has problems; every problem)."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return None, [Problem(source, "file", f"cannot be read: {exc.strerror or exc}")]
    except yaml.YAMLError as exc:
        return None, [Problem(source, "file", f"is not valid YAML: {_one_line(exc)}")]
    workflow, problems = parse_workflow(data, source, builtin=builtin)
    if workflow is None:
        return None, problems
    workflow, invalid = validate_workflow(workflow)
    problems += invalid
    return (None if problems else workflow), problems


def parse_workflow(data: Any, source: str, *, builtin: bool = False) -> tuple[Workflow | None, list[Problem]]:
    """The file's structure as a Workflow (not yet validated), and the structural problems found."""
    problems: list[Problem] = []

    def problem(where: str, message: str) -> None:
        problems.append(Problem(source, where, message))

    if not isinstance(data, dict):
        return None, [Problem(source, "file", "must be a mapping with name, inputs, steps and outputs")]
    _unknown_keys(data, WORKFLOW_KEYS, "file", problem)
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problem("name", f"must be a name of letters, digits and underscores, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        problem("description", "must be a string")
    inputs = _mapping(data, "inputs", problem)
    outputs = _mapping(data, "outputs", problem)
    if not outputs and isinstance(data.get("outputs") or {}, dict):
        problem("outputs", "a workflow needs at least one output")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        problem("steps", "must be a non-empty list of steps")
        steps = []
    workflow = Workflow(
        name=name if isinstance(name, str) else "",
        description=description if isinstance(description, str) else "",
        inputs=tuple(spec for key, raw in inputs.items() if (spec := _input(key, raw, problem)) is not None),
        steps=tuple(step for i, raw in enumerate(steps) if (step := _step(i, raw, problem)) is not None),
        outputs=tuple(out for key, raw in outputs.items() if (out := _output(key, raw, problem)) is not None),
        source=source,
        builtin=builtin,
    )
    return workflow, problems


def _input(name: Any, raw: Any, problem) -> InputSpec | None:
    where = f"inputs.{name}"
    if not isinstance(name, str) or not NAME.match(name):
        problem(where, "an input name is letters, digits and underscores")
        return None
    if isinstance(raw, str):  # shorthand `prompt: text`
        raw = {"type": raw}
    if not isinstance(raw, dict):
        problem(where, "must be a type ('text') or a mapping {type, default, optional, description}")
        return None
    _unknown_keys(raw, INPUT_KEYS, where, problem)
    try:
        value_type = parse_type(raw.get("type"))
    except TypeParseError as exc:
        problem(where, str(exc))
        return InputSpec(name, NEVER)  # still declared: its uses are not reported again
    default = raw.get("default")
    if default is not None and not conforms(default, value_type):
        problem(where, f"default {default!r} is not a {value_type}")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        problem(where, "optional must be true or false")
    return InputSpec(name, value_type, required=default is None and optional is not True, default=default,
                     description=str(raw.get("description", "")))  # fmt: skip


def _step(index: int, raw: Any, problem) -> Step | None:
    if not isinstance(raw, dict):
        problem(f"steps[{index}]", "must be a mapping with name, op and with")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problem(f"steps[{index}]", f"needs a name of letters, digits and underscores, got {name!r}")
        return None
    where = f"step {name!r}"
    _unknown_keys(raw, STEP_KEYS, where, problem)
    op = raw.get("op")
    if not isinstance(op, str):
        problem(where, f"needs an op (an operation name), got {op!r}")
        op = ""
    args = raw.get("with") or {}
    if not isinstance(args, dict):
        problem(where, "with must map op input names to values or $references")
        args = {}
    fan_out = raw.get("fan_out")
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float)
                                  or timeout_s <= 0):  # fmt: skip
        problem(where, f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        timeout_s = None
    return Step(
        name=name,
        op=op,
        args={str(key): _value(value, where, f"input {key!r}", problem) for key, value in args.items()},
        fan_out=None if fan_out is None else _value(fan_out, where, "fan_out", problem),
        timeout_s=timeout_s,
    )


def _output(name: Any, raw: Any, problem) -> OutputRef | None:
    where = f"outputs.{name}"
    if not isinstance(name, str) or not NAME.match(name):
        problem(where, "an output name is letters, digits and underscores")
        return None
    ref = _value(raw, where, "an output", problem)
    if not isinstance(ref, Ref):
        problem(where, f"must be a reference ($step.output or ${INPUTS}.name), got {raw!r}")
        return None
    return OutputRef(name, ref)


def _value(raw: Any, where: str, what: str, problem) -> Any:
    """A ``$step.output`` string as a Ref; ``$$...`` as the literal ``$...``; anything else as is."""
    if not isinstance(raw, str) or not raw.startswith("$"):
        return raw
    if raw.startswith("$$"):
        return raw[1:]
    match = REF.match(raw)
    if match is None:
        problem(where, f"{what}: {raw!r} is not a reference ($step.output or ${INPUTS}.name; "
                "write $$ for a literal $)")  # fmt: skip
        return raw
    return Ref(match["step"], match["output"])


def _mapping(data: dict, key: str, problem) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        problem(key, "must be a mapping of names")
        return {}
    return value


def _unknown_keys(raw: dict, allowed: set[str], where: str, problem) -> None:
    for key in raw:
        if key not in allowed:
            problem(where, f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
