"""Workflow validation: each kind of error is caught and named (file, step or input/output, problem),
and one file with several errors reports all of them at once."""

from __future__ import annotations

import pytest

from tests.workflow_fakes import problems_of, workflow_of

GOOD_STEP = "  - {name: ask, op: chat, with: {prompt: $inputs.prompt}}\n"


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return str(problems[0])


def workflow(steps: str, outputs: str = "{text: $ask.text}", inputs: str = "{prompt: text}") -> str:
    return f"name: wf\ninputs: {inputs}\nsteps:\n{steps}outputs: {outputs}\n"


@pytest.mark.parametrize(("steps", "outputs", "expected"), [
    ("  - {name: ask, op: chatt, with: {prompt: $inputs.prompt}}\n", "{text: $ask.text}",
     ("test.yaml: step 'ask': unknown operation 'chatt'; known: chat, embed, encode_image, encode_text, "
     "generate, score, select")),
    (GOOD_STEP + "  - {name: paint, op: generate, with: {prompt: $asker.text}}\n", "{text: $ask.text}",
     "test.yaml: step 'paint': input 'prompt' refers to $asker.text, but there is no step 'asker'"),
    (GOOD_STEP + "  - {name: paint, op: generate, with: {prompt: $ask.answer}}\n", "{text: $ask.text}",
     ("test.yaml: step 'paint': input 'prompt' refers to $ask.answer, but chat step 'ask' has no output "
     "'answer'; its outputs: text, finish_reason, completion_tokens")),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.question}}\n", "{text: $ask.text}",
     ("test.yaml: step 'ask': input 'prompt' refers to $inputs.question, but the workflow declares no input "
     "'question' (inputs: prompt)")),
    (GOOD_STEP + "  - {name: paint, op: generate, with: {prompt: $ask.completion_tokens}}\n", "{text: $ask.text}",
     "test.yaml: step 'paint': input 'prompt' of generate takes text, but $ask.completion_tokens is int"),
    (GOOD_STEP + GOOD_STEP, "{text: $ask.text}",
     "test.yaml: step 'ask': duplicate step name; step names must be unique"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt, images: $inputs.prompt}}\n", "{text: $ask.text}",
     "test.yaml: step 'ask': input 'images' of chat takes list[image], but $inputs.prompt is text"),
    (("  - {name: rank, op: score, with: {query: $embed.embedding}}\n"
     "  - {name: embed, op: embed, with: {text: $inputs.prompt}}\n"), "{s: $rank.scores}",
     "test.yaml: step 'rank': missing required input 'candidates' of score"),
    (GOOD_STEP, "{image: $paint.image}",
     "test.yaml: outputs.image: is never produced: $paint.image names no step (steps: ask)"),
    (GOOD_STEP, "{answer: $ask.reply}",
     ("test.yaml: outputs.answer: the output refers to $ask.reply, but chat step 'ask' has no output 'reply'; "
     "its outputs: text, finish_reason, completion_tokens")),
    ("  - {name: ask, op: chat, with: {max_tokens: 8}}\n", "{text: $ask.text}",
     "test.yaml: step 'ask': chat takes exactly one of request, prompt (got none)"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt, colour: red}}\n", "{text: $ask.text}",
     ("test.yaml: step 'ask': chat has no input 'colour'; its inputs: request, prompt, system, image, images, "
     "max_tokens, temperature, top_p, seed, pruning_method, visual_token_keep_ratio")),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt, max_tokens: many}}\n", "{text: $ask.text}",
     "test.yaml: step 'ask': input 'max_tokens' of chat takes int, got the literal 'many'"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt, image: cat.png}}\n", "{text: $ask.text}",
     ("test.yaml: step 'ask': input 'image' of chat takes image, got the literal 'cat.png'; images come "
     "from $inputs or a step, never a literal")),
    ("  - {name: e, op: embed, fan_out: 2, with: {text: $inputs.prompt}}\n", "{v: $e.embedding}",
     "test.yaml: step 'e': fan_out needs an op with a seed input; embed has none"),
    ("  - {name: p, op: generate, fan_out: $inputs.prompt, with: {prompt: $inputs.prompt}}\n", "{i: $p.image}",
     "test.yaml: step 'p': fan_out takes int, but $inputs.prompt is text"),
    ("  - {name: p, op: generate, fan_out: 0, with: {prompt: $inputs.prompt}}\n", "{i: $p.image}",
     "test.yaml: step 'p': fan_out must be an int >= 1 or a reference, got 0"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt}, retries: 3}\n", "{text: $ask.text}",
     "test.yaml: step 'ask': unknown key 'retries'; allowed: description, fan_out, name, op, timeout_s, with"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt}, timeout_s: -1}\n", "{text: $ask.text}",
     "test.yaml: step 'ask': timeout_s must be a number of seconds > 0, got -1"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs..prompt}}\n", "{text: $ask.text}",
     ("test.yaml: step 'ask': input 'prompt': '$inputs..prompt' is not a reference ($step.output or "
     "$inputs.name; write $$ for a literal $)")),
    ("  - {name: inputs, op: chat, with: {prompt: $inputs.prompt}}\n", "{text: $inputs.prompt}",
     "test.yaml: step 'inputs': 'inputs' is reserved for request inputs ($inputs.NAME); rename the step"),
    ("  - {name: ask, op: chat, with: {prompt: $inputs.prompt}}\n", "{text: literal}",
     "test.yaml: outputs.text: must be a reference ($step.output or $inputs.name), got 'literal'"),
])
def test_each_error_is_named(steps, outputs, expected):
    assert one_problem(workflow(steps, outputs)) == expected


def test_a_cycle_names_its_steps():
    steps = ("  - {name: a, op: chat, with: {prompt: $c.text}}\n"
             "  - {name: b, op: chat, with: {prompt: $a.text}}\n"
             "  - {name: c, op: chat, with: {prompt: $b.text}}\n"
             "  - {name: behind, op: chat, with: {prompt: $c.text}}\n")
    problems = [str(p) for p in problems_of(workflow(steps, "{text: $behind.text}"))]
    assert problems == [
        "test.yaml: step 'a': is part of a cycle: a -> c -> b -> a",
        "test.yaml: step 'b': is part of a cycle: b -> a -> c -> b",
        "test.yaml: step 'c': is part of a cycle: c -> b -> a -> c",
    ]


def test_a_step_reading_itself_is_a_cycle():
    steps = "  - {name: a, op: chat, with: {prompt: $a.text}}\n"
    assert one_problem(workflow(steps, "{text: $a.text}")) == "test.yaml: step 'a': is part of a cycle: a -> a"


@pytest.mark.parametrize(("inputs", "expected"), [
    ("{prompt: texte}", ("test.yaml: inputs.prompt: unknown type 'texte'; allowed: text, image, int, float, bool, "
                        "embedding, list[T], A | B")),
    ("{prompt: {type: text, default: 3}}", "test.yaml: inputs.prompt: default 3 is not a text"),
    ("{prompt: {type: text, required: false}}", ("test.yaml: inputs.prompt: unknown key 'required'; allowed: "
                                                "default, description, optional, type")),
])
def test_input_declaration_errors(inputs, expected):
    assert one_problem(workflow(GOOD_STEP, inputs=inputs)) == expected


def test_an_optional_input_without_default_cannot_feed_a_required_op_input():
    text = workflow("  - {name: e, op: score, with: {query: $inputs.q, candidates: $inputs.c}}\n", "{s: $e.scores}",
                    inputs="{q: {type: embedding, optional: true}, c: 'list[embedding]'}")
    assert one_problem(text) == ("test.yaml: step 'e': input 'query' needs a value, but $inputs.q is optional "
                                 "without a default")


def test_one_file_with_several_errors_reports_all_of_them_with_file_and_step():
    text = """
name: broken
inputs: {prompt: text, n: {type: int, default: 2}}
steps:
  - {name: paint, op: generat, with: {prompt: $inputs.prompt}}
  - {name: ask, op: chat, with: {prompt: $inputs.prompt, image: $inputs.prompt}}
  - {name: ask, op: chat, with: {prompt: $inputs.prompt}}
  - {name: rank, op: score, with: {query: $ask.txt}}
  - {name: loop_a, op: chat, with: {prompt: $loop_b.text}}
  - {name: loop_b, op: chat, with: {prompt: $loop_a.text}}
outputs: {image: $paint.image, caption: $ask.text, best: $pick.item}
"""
    problems = [str(p) for p in problems_of(text, source="workflows/broken.yaml")]
    assert problems == [
        "workflows/broken.yaml: step 'ask': duplicate step name; step names must be unique",
        "workflows/broken.yaml: step 'loop_a': is part of a cycle: loop_a -> loop_b -> loop_a",
        "workflows/broken.yaml: step 'loop_b': is part of a cycle: loop_b -> loop_a -> loop_b",
        ("workflows/broken.yaml: step 'paint': unknown operation 'generat'; known: chat, embed, encode_image, "
        "encode_text, generate, score, select"),
        "workflows/broken.yaml: step 'ask': input 'image' of chat takes image, but $inputs.prompt is text",
        "workflows/broken.yaml: step 'rank': missing required input 'candidates' of score",
        ("workflows/broken.yaml: step 'rank': input 'query' refers to $ask.txt, but chat step 'ask' has no output "
        "'txt'; its outputs: text, finish_reason, completion_tokens"),
        ("workflows/broken.yaml: outputs.best: is never produced: $pick.item names no step "
        "(steps: paint, ask, rank, loop_a, loop_b)"),
    ]


def test_select_returns_the_item_type_of_its_list_and_fan_out_makes_lists():
    wf = workflow_of("""
name: typed
inputs: {prompt: text}
steps:
  - {name: paint, op: generate, fan_out: 3, with: {prompt: $inputs.prompt}}
  - {name: pick, op: select, with: {items: $paint.image, scores: [0.1, 0.5, 0.2], k: 2}}
  - {name: words, op: select, with: {items: [a, b], scores: [1, 2]}}
outputs: {image: $pick.item, top: $pick.items, seeds: $paint.seed, word: $words.item}
""")
    assert {out.name: str(out.type) for out in wf.outputs} == {
        "image": "image", "top": "list[image]", "seeds": "list[int]", "word": "text"}


def test_a_literal_dollar_is_written_twice():
    wf = workflow_of("name: w\nsteps:\n  - {name: ask, op: chat, with: {prompt: $$5 please}}\noutputs: {t: $ask.text}\n")
    assert wf.steps[0].args == {"prompt": "$5 please"}


def test_structure_errors_of_the_file_itself():
    assert [str(p) for p in problems_of("- just a list")] == [
        "test.yaml: file: must be a mapping with name, inputs, steps and outputs"]
    assert [str(p) for p in problems_of("name: x y\nsteps: []\noutputs: {}\nextra: 1\n")] == [
        "test.yaml: file: unknown key 'extra'; allowed: description, inputs, name, outputs, steps",
        "test.yaml: name: must be a name of letters, digits and underscores, got 'x y'",
        "test.yaml: outputs: a workflow needs at least one output",
        "test.yaml: steps: must be a non-empty list of steps",
    ]
