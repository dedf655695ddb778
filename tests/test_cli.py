"""The `triptych` CLI against the running test server: chat streams an answer, generate writes PNGs."""

from PIL import Image

from launcher.cli import main
from tests.serving import image_bytes


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
