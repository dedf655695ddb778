"""Each stage engine conforms to the Protocol its deployment holds it through, and answers ``info()``.

Conformance is checked on the signatures (parameter names, kinds, defaults and annotations; the
return annotation equal or a subtype), which ``isinstance`` on a runtime Protocol would not see.
"""

import collections.abc
import inspect
import typing

import pytest

import models
from decoders.engine import LLMEngine
from decoders.protocol import DecoderEngineProtocol
from denoisers import DenoiserEngine, DenoiserEngineProtocol, TextEncoderEngine, TextEncoderEngineProtocol
from encoders.clip_embedder import ClipEmbedder
from encoders.engine import VisionEncoderEngine
from encoders.protocol import EmbedderEngineProtocol, VisionEngineProtocol
from toy import CHECKPOINTS
from triptych.types import DecoderInfo, VisionInfo

PAIRS = [
    (VisionEncoderEngine, VisionEngineProtocol),
    (LLMEngine, DecoderEngineProtocol),
    (TextEncoderEngine, TextEncoderEngineProtocol),
    (DenoiserEngine, DenoiserEngineProtocol),
    (ClipEmbedder, EmbedderEngineProtocol),
]


def protocol_methods(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")]


def returns_compatible(got, wanted) -> bool:
    """``got`` is ``wanted``, or a generic whose origin subclasses wanted's with the same first argument."""
    if got == wanted:
        return True
    got_origin, wanted_origin = typing.get_origin(got), typing.get_origin(wanted)
    if got_origin is None or wanted_origin is None or not issubclass(got_origin, wanted_origin):
        return False
    return typing.get_args(got)[:1] == typing.get_args(wanted)[:1]


@pytest.mark.parametrize(("engine_cls", "protocol"), PAIRS, ids=[p.__name__ for _, p in PAIRS])
def test_engine_conforms_to_its_protocol(engine_cls, protocol):
    names = protocol_methods(protocol)
    assert names, f"{protocol.__name__} declares no methods"
    for name in names:
        wanted, got = getattr(protocol, name), getattr(engine_cls, name, None)
        assert callable(got), f"{engine_cls.__name__} has no method {name}"
        wanted_params = list(inspect.signature(wanted).parameters.values())[1:]  # without self
        got_params = list(inspect.signature(got).parameters.values())[1:]
        assert [(p.name, p.kind, p.default) for p in got_params] == [
            (p.name, p.kind, p.default) for p in wanted_params
        ], f"{engine_cls.__name__}.{name}"
        wanted_hints, got_hints = typing.get_type_hints(wanted), typing.get_type_hints(got)
        for p in wanted_params:
            assert got_hints.get(p.name) == wanted_hints.get(p.name), f"{engine_cls.__name__}.{name}({p.name})"
        assert returns_compatible(got_hints.get("return"), wanted_hints.get("return")), (
            f"{engine_cls.__name__}.{name} returns {got_hints.get('return')}, wanted {wanted_hints.get('return')}"
        )


def test_the_checker_sees_a_mismatch():
    class Wrong:
        def encode(self, pictures: list) -> list: ...

        def info(self) -> DecoderInfo: ...

    with pytest.raises(AssertionError):
        test_engine_conforms_to_its_protocol(Wrong, VisionEngineProtocol)
    assert returns_compatible(typing.Generator[int, None, None], collections.abc.Iterator[int])
    assert not returns_compatible(typing.Generator[str, None, None], collections.abc.Iterator[int])


def test_vision_and_decoder_engines_answer_info():
    vlm_dir = CHECKPOINTS / "toy-vlm"
    vision = VisionEncoderEngine(models.load_vision_tower(vlm_dir)).info()
    assert isinstance(vision, VisionInfo)
    assert vision.num_visual_tokens == 64 and vision.revision and vision.preprocess["dtype"] == "float32"
    decoder = LLMEngine(models.load_language_model(vlm_dir)).info()
    assert decoder == DecoderInfo(model_id="toy-vlm", context_length=decoder.context_length)
    assert decoder.context_length > 0
