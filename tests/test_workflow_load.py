"""Loading workflow files at start-up (built-ins + a directory) and `triptych workflow validate FILE`."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import main
from pipelines.workflow import WorkflowFileError, load_workflows
from pipelines.workflow.load import BUILTIN_DIR
from triptych.config import TriptychConfig

BUILTINS = ("best_of_n", "chat", "describe_and_reimagine", "embed", "image_search", "text_to_image")

CAPTION = """\
name: caption_twice
description: Two captions of one image, at two lengths (the steps run at the same time).
inputs:
  image: image
steps:
  - name: short
    op: chat
    with: {image: $inputs.image, prompt: describe the image., max_tokens: 8}
  - name: long
    op: chat
    with: {image: $inputs.image, prompt: describe the image., max_tokens: 32}
outputs:
  short: $short.text
  long: $long.text
"""

BROKEN = """\
name: broken
inputs: {prompt: text}
steps:
  - {name: paint, op: paint, with: {prompt: $inputs.prompt}}
  - {name: ask, op: chat, with: {prompt: $inputs.prompt, max_tokens: lots}}
outputs: {image: $paint.image, answer: $ask.answer}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_every_builtin_loads_and_validates():
    workflows = load_workflows()
    assert sorted(workflows) == list(BUILTINS)
    assert all(w.builtin and w.outputs and all(o.type is not None for o in w.outputs) for w in workflows.values())
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")) == list(BUILTINS)


def test_the_builtins_public_inputs_and_outputs():
    described = {name: w.describe() for name, w in load_workflows().items()}
    best = described["best_of_n"]
    assert best["inputs"]["n"] == {"type": "int", "required": False, "default": 4,
                                   "description": "how many candidates (1..16)"}
    assert best["inputs"]["prompt"]["required"] is True
    assert best["outputs"] == {"image": {"type": "image"}, "best_index": {"type": "int"},
                               "scores": {"type": "list[float]"}, "seeds": {"type": "list[int]"}}
    assert described["describe_and_reimagine"]["outputs"] == {"caption": {"type": "text"}, "image": {"type": "image"}}
    assert described["describe_and_reimagine"]["inputs"]["image"]["type"] == "image"
    search = described["image_search"]
    assert (search["inputs"]["query"]["type"], search["inputs"]["images"]["type"]) == ("text | image", "list[image]")
    assert search["outputs"] == {"ranking": {"type": "list[int]"}, "scores": {"type": "list[float]"}}
    assert described["chat"]["inputs"]["request"]["type"] == "chat_request"
    assert described["text_to_image"]["inputs"]["request"]["type"] == "image_request"
    assert described["embed"]["inputs"]["items"]["type"] == "list[text | image]"


def test_a_user_yaml_in_the_directory_is_loaded_beside_the_builtins(tmp_path):
    write(tmp_path, "caption_twice.yaml", CAPTION)
    write(tmp_path, "notes.txt", "not a workflow")
    workflows = load_workflows(tmp_path)
    assert sorted(workflows) == sorted((*BUILTINS, "caption_twice"))
    user = workflows["caption_twice"]
    assert not user.builtin and user.source == str(tmp_path / "caption_twice.yaml")
    assert [s.name for s in user.steps] == ["short", "long"]


def test_every_problem_of_every_file_in_one_error(tmp_path):
    write(tmp_path, "broken.yaml", BROKEN)
    write(tmp_path, "syntax.yml", "name: [unclosed\n")
    write(tmp_path, "chat.yaml", CAPTION.replace("caption_twice", "chat"))
    with pytest.raises(WorkflowFileError) as info:
        load_workflows(tmp_path)
    lines = [str(p) for p in info.value.problems]
    assert lines[:3] == [
        (f"{tmp_path}/broken.yaml: step 'paint': unknown operation 'paint'; known: chat, embed, encode_image, "
        "encode_text, generate, score, select"),
        f"{tmp_path}/broken.yaml: step 'ask': input 'max_tokens' of chat takes int, got the literal 'lots'",
        (f"{tmp_path}/broken.yaml: outputs.answer: the output refers to $ask.answer, but chat step 'ask' has no "
        "output 'answer'; its outputs: text, finish_reason, completion_tokens"),
    ]
    assert lines[3] == (f"{tmp_path}/chat.yaml: name: 'chat' is already the name of the built-in in "
                        f"{BUILTIN_DIR}/chat.yaml; choose another name")
    assert lines[4].startswith(f"{tmp_path}/syntax.yml: file: is not valid YAML: ")
    assert len(lines) == 5
    assert str(info.value).splitlines()[0] == "invalid workflow files:"
    assert all(f"  {line}" in str(info.value).splitlines() for line in lines)


def test_two_user_files_may_not_share_a_name(tmp_path):
    write(tmp_path, "a.yaml", CAPTION)
    write(tmp_path, "b.yaml", CAPTION)
    with pytest.raises(WorkflowFileError, match=r"b.yaml: name: 'caption_twice' is already the name of the "
                                                r"workflow in .*a.yaml"):
        load_workflows(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(WorkflowFileError, match="workflows_dir: is not a directory"):
        load_workflows(tmp_path / "nope")


def test_the_config_reads_the_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIPTYCH_WORKFLOWS_DIR", str(tmp_path))
    assert TriptychConfig().workflows_dir == tmp_path
    monkeypatch.delenv("TRIPTYCH_WORKFLOWS_DIR")
    assert TriptychConfig().workflows_dir is None


def test_cli_validate_a_good_file_prints_one_line_and_exits_0(tmp_path, capsys):
    path = write(tmp_path, "caption_twice.yaml", CAPTION)
    assert main(["workflow", "validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: workflow 'caption_twice' is valid (1 inputs, 2 steps, outputs short, long)\n"
    assert err == ""


def test_cli_validate_a_builtin_is_valid(capsys):
    assert main(["workflow", "validate", str(BUILTIN_DIR / "best_of_n.yaml")]) == 0
    assert "workflow 'best_of_n' is valid" in capsys.readouterr().out


def test_cli_validate_prints_every_error_and_exits_2(tmp_path, capsys):
    good = write(tmp_path, "good.yaml", CAPTION)
    bad = write(tmp_path, "broken.yaml", BROKEN)
    assert main(["workflow", "validate", str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert "good.yaml: workflow 'caption_twice' is valid" in out
    assert err.splitlines() == [
        (f"error: {bad}: step 'paint': unknown operation 'paint'; known: chat, embed, encode_image, encode_text, "
        "generate, score, select"),
        f"error: {bad}: step 'ask': input 'max_tokens' of chat takes int, got the literal 'lots'",
        (f"error: {bad}: outputs.answer: the output refers to $ask.answer, but chat step 'ask' has no output "
        "'answer'; its outputs: text, finish_reason, completion_tokens"),
        f"{bad}: 3 errors",
    ]


def test_cli_validate_refuses_a_builtin_name_and_a_missing_file(tmp_path, capsys):
    clash = write(tmp_path, "mine.yaml", CAPTION.replace("caption_twice", "best_of_n"))
    assert main(["workflow", "validate", str(clash), str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"error: {clash}: name: 'best_of_n' is already the name of the built-in in" in err
    assert f"error: {tmp_path}/missing.yaml: file: cannot be read: No such file or directory" in err


def test_cli_workflow_needs_validate_and_a_file(capsys):
    assert main(["workflow", "validate"]) == 2
    assert capsys.readouterr().err == "error: workflow validate needs at least one FILE\n"
