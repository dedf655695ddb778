"""The `triptych` CLI: against the running test server (chat streams an answer, generate writes PNGs),
and without one (missing files, unwritable outputs and an unreachable server are one-line errors)."""

import pytest
from PIL import Image

from launcher.cli import main
from tests.serving import image_bytes
from triptych.ports import free_port


def test_chat_streams_answer_with_usage(server, tmp_path, capsys):
    image = tmp_path / "q.png"
    image.write_bytes(image_bytes((12, 34, 56)))
    assert main(["chat", "--target", server.grpc_target, "--image", str(image), "--max-tokens", "4",
                 "what is it?"]) == 0
    out = capsys.readouterr().out
    assert "cache_hit=False" in out and "visual_tokens=" in out and "finish=" in out


def test_chat_bad_input_exits_2_naming_the_field(server, capsys):
    assert main(["chat", "--target", server.grpc_target, "--max-tokens", "0", "hi"]) == 2
    assert "INVALID_ARGUMENT: max_tokens" in capsys.readouterr().err


def test_generate_writes_pngs(server, tmp_path, capsys):
    out = tmp_path / "img.png"
    assert main(["generate", "--target", server.grpc_target, "--steps", "2", "--seed", "5", "--n", "2",
                 "--size", "32x32", "-o", str(out), "a red circle"]) == 0
    assert Image.open(out).size == (32, 32)
    assert (tmp_path / "img-2.png").exists()
    assert "seed 5" in capsys.readouterr().out


def test_generate_unknown_sampler_exits_2(server, tmp_path, capsys):
    assert main(["generate", "--target", server.grpc_target, "--sampler", "nope", "-o",
                 str(tmp_path / "x.png"), "a red circle"]) == 2
    assert "sampler" in capsys.readouterr().err


# ---- failures a new user meets, without a server: one line `error: ...` on stderr, exit 2 ----

def unreachable_target() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_chat_missing_image_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert main(["chat", "--target", unreachable_target(), "--image", str(missing), "hi"]) == 2
    assert one_line_error(capsys) == f"error: --image {missing}: No such file or directory"


def test_chat_image_that_is_a_directory_is_one_line_error(tmp_path, capsys):
    assert main(["chat", "--target", unreachable_target(), "--image", str(tmp_path), "hi"]) == 2
    assert one_line_error(capsys) == f"error: --image {tmp_path}: Is a directory"


@pytest.mark.parametrize("command", [["chat", "hi"], ["generate", "a red circle"]])
def test_unreachable_server_names_the_target(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # generate's default output lands here
    target = unreachable_target()
    assert main([command[0], "--target", target, *command[1:]]) == 2
    err = one_line_error(capsys)
    assert f"no Triptych server reachable at {target} (gRPC UNAVAILABLE" in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("output, message", [
    ("nowhere/img.png", "directory {tmp}/nowhere does not exist"),
    (".", "is a directory"),
])
def test_generate_unwritable_output_fails_before_asking_the_server(tmp_path, capsys, output, message):
    path = tmp_path / output
    # the target is unreachable: reaching it would give the UNAVAILABLE error instead
    assert main(["generate", "--target", unreachable_target(), "-o", str(path), "a red circle"]) == 2
    assert one_line_error(capsys) == f"error: --output {path}: {message.format(tmp=tmp_path)}"


@pytest.mark.parametrize("size", ["abc", "64x", "x64", "64x64x2", "8x-8"])
def test_generate_bad_size_is_a_usage_error(capsys, size):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--size", size, "a red circle"])
    assert info.value.code == 2
    assert f"argument --size: {size!r} is not WIDTHxHEIGHT" in capsys.readouterr().err
