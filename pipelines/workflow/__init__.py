"""Declarative workflows: YAML DAGs of stage operations, validated at load time, run by one executor.

The public API the ingress uses:
``load_workflows(directory)`` -> {name: Workflow} (raises ``WorkflowFileError``),
``check_inputs(workflow, inputs, limits)``, ``run_workflow(workflow, inputs, context, timeout_s=)``
(async iterator of ``StepStarted`` / ``StepProgress`` / ``StepFinished`` then ``WorkflowResult``),
``run_to_result(...)``, and ``OpContext`` (the stage pipelines the ops run over).
"""

from pipelines.workflow.events import StepFinished, StepProgress, StepStarted, WorkflowEvent, WorkflowResult
from pipelines.workflow.executor import run_to_result, run_workflow
from pipelines.workflow.inputs import MAX_FAN_OUT, check_inputs
from pipelines.workflow.load import WorkflowFileError, load_file, load_workflows
from pipelines.workflow.ops import OPS, OpContext
from pipelines.workflow.spec import InputSpec, OutputRef, Problem, Ref, Step, Workflow

__all__ = [
    "MAX_FAN_OUT", "OPS", "InputSpec", "OpContext", "OutputRef", "Problem", "Ref", "Step", "StepFinished",
    "StepProgress", "StepStarted", "Workflow", "WorkflowEvent", "WorkflowFileError", "WorkflowResult",
    "check_inputs", "load_file", "load_workflows", "run_to_result", "run_workflow",
]
