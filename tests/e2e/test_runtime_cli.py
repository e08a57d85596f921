"""The run / chat / perplexity / bench commands end to end on a tiny synthetic GGUF."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ggufkit.cli import cli, main
from tests.helpers.tiny_models import write_chat_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_chat_gguf(tmp_path_factory.mktemp("cli") / "tiny.gguf"))


def test_run_greedy_is_deterministic(tiny):
    r1 = CliRunner().invoke(cli, ["run", tiny, "-p", "Hello", "-n", "5", "--temp", "0"])
    r2 = CliRunner().invoke(cli, ["run", tiny, "-p", "Hello", "-n", "5", "--temp", "0"])
    assert r1.exit_code == 0, r1.output
    assert r1.stdout.startswith("Hello") and r1.stdout == r2.stdout
    r3 = CliRunner().invoke(cli, ["run", tiny, "-p", "Hello", "-n", "5", "--temp", "1.0", "--seed", "3"])
    assert r3.exit_code == 0 and r3.stdout.startswith("Hello")


def test_chat_json_lines(tiny):
    r = CliRunner().invoke(cli, ["chat", tiny, "--json", "-n", "4", "--reasoning", "off"], input="hi\n\nthere\n")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert len(lines) == 2 and all(x["role"] == "assistant" and "tool_calls" in x for x in lines)


def test_bench_json_fields(tiny):
    r = CliRunner().invoke(cli, ["bench", tiny, "-p", "8", "-n", "4", "-r", "2", "-o", "json", "-t", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert [(x["n_prompt"], x["n_gen"]) for x in res] == [(8, 0), (0, 4)]
    assert all(x["avg_ts"] > 0 and "stddev_ts" in x and len(x["samples_ts"]) == 2 for x in res)


def test_bench_parallel_rows(tiny):
    r = CliRunner().invoke(cli, ["bench", tiny, "-p", "0", "-n", "4", "-r", "1", "-o", "json", "-t", "1",
                                 "--parallel", "1,3"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert [(x["n_gen"], x["n_seq"]) for x in res] == [(4, 1), (4, 3)]
    assert all(x["avg_ts"] > 0 for x in res)
    r = CliRunner().invoke(cli, ["bench", tiny, "-p", "0", "-n", "2", "-r", "1", "-t", "1", "--parallel", "2"])
    assert r.exit_code == 0 and "seqs" in r.output.splitlines()[0], r.output
    r = CliRunner().invoke(cli, ["bench", tiny, "--parallel", "0,99"])
    assert r.exit_code != 0 and "--parallel 0,99" in str(r.exception)


def test_perplexity_output_lines(tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"word{i % 37} and more" for i in range(200)))
    r = CliRunner().invoke(cli, ["perplexity", tiny, "-f", str(text), "-c", "32", "--chunks", "2"])
    assert r.exit_code == 0, r.output
    assert "[1]" in r.output and "[2]" in r.output and "Final estimate: PPL = " in r.output


def test_user_errors_are_one_line(tiny, tmp_path, capsys):
    short = tmp_path / "s.txt"
    short.write_text("too short")
    for argv in (["perplexity", tiny, "-f", str(short), "-c", "64"],
                 ["run", tiny, "-p", "x", "-n", "10", "-c", "4"],
                 ["run", str(tmp_path / "missing.gguf"), "-p", "x"],
                 ["perplexity", tiny, "--kl-divergence"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "Traceback" not in "".join(err)
