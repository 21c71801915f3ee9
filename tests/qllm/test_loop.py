"""The coder-evaluator loop against a scripted OpenAI-compatible server on loopback (real `openai` client).

Every scripted answer goes through the real sandbox validator; the server sees every request, so the
tests check what was fed back to the coder as well as the outcome.
"""
import glob
import json
import logging
import os
import sys

import pytest

from helpers import run_main
from llm import LLMRequestError, make_llm
from qllm import records
from qllm.loader import TFCAFLoadError, load_tfcaf
from qllm.loop import LoopSettings, TFCAFGenerationError, generate
from qllm.states import sample_states
from qllm.validate import ValidationContext

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "llm"))
from loopback_server import LoopbackServer, reply, status  # noqa: E402

GOOD = """```python
import torch

def tfcaf(state, n_agents):
    w = torch.ones(state.shape[0], n_agents, dtype=state.dtype, device=state.device)
    return w, state[:, :1] * 0.0
```"""
GOOD2 = GOOD.replace("torch.ones(", "0.5 * torch.ones(")
SYNTAX = "Here you go:\n```python\ndef tfcaf(state, n_agents):\n    return (state,\n```"
SHAPE = GOOD.replace("n_agents, dtype", "n_agents + 1, dtype")
NAN = GOOD.replace("w = torch.ones(", "w = torch.zeros(").replace("return w,", "return w / w,")
NEGATIVE = GOOD.replace("torch.ones(", "-torch.ones(")
IMPORT_OS = "```python\nimport os\n\ndef tfcaf(state, n_agents):\n    os.system('true')\n```"


def llm_config(srv, tmp_path):
    return {"backend": "openai", "base_url": srv.base_url, "model": "scripted", "cache_dir": str(tmp_path / "cache"),
            "max_retries": 0, "timeout_s": 30, "temperature": 0.7}


@pytest.fixture(scope="module")
def climbing_ctx():
    states = sample_states("matrix_game", {"game": "climbing", "episode_limit": 5}, n=64, seed=0)
    return lambda gate: ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=gate)


def last_user(request):
    return request["body"]["messages"][-1]["content"]


def test_loop_repairs_bad_candidates_and_survives_evaluator_garbage(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(reply(SYNTAX, SHAPE, NAN),  # round 0: three broken candidates
                 reply(GOOD),  # candidate 0 repaired at once
                 reply(NEGATIVE), reply(GOOD2),  # candidate 1: shape fixed, sign violated, then fixed
                 reply(NAN), reply(IMPORT_OS),  # candidate 2 never gets it right: rejected
                 reply("Both look reasonable to me."), reply("[0, 1]"))  # evaluator: garbage, then a choice
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        settings = LoopSettings(candidates=3, rounds=1, max_repairs=2)
        code, record = generate(llm, "TASK: climbing game", climbing_ctx(True), settings)
        requests = list(srv.requests)
    assert "0.5 * torch.ones" in code  # the evaluator's second answer picked the second valid candidate
    cands = record["rounds"][0]["candidates"]
    assert [len(c["attempts"]) for c in cands] == [2, 3, 3]
    assert [a["report"]["stage"] for a in cands[1]["attempts"]] == ["shape", "gate", "ok"]
    assert [a["report"]["stage"] for a in cands[2]["attempts"]] == ["finite", "finite", "policy"]
    assert [c["report"]["ok"] for c in cands] == [True, True, False]
    assert record["rounds"][0]["selection"]["how"] == "evaluator" and record["rounds"][0]["chosen"] == 1
    # the validator's findings went back to the coder, in the conversation
    feedback = [last_user(r) for r in requests if "failed the automatic checks" in last_user(r)]
    assert len(feedback) == 5
    assert "'shape' check" in feedback[1] and "non-negative" in feedback[2]
    assert "Candidate 2:" in last_user(requests[-2]) and "could not read a choice" in last_user(requests[-1])


def test_loop_fails_clearly_when_nothing_validates(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(reply(NAN, SYNTAX), reply(NAN), reply(SYNTAX))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        with pytest.raises(TFCAFGenerationError, match="no candidate passed validation") as e:
            generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=2, rounds=1, max_repairs=1))
    assert "finite" in str(e.value) and "parse" in str(e.value)


def test_a_failed_repair_request_ends_only_its_candidate(tmp_path, climbing_ctx, caplog):
    """HTTP 400 on a repair (a long conversation over the context): that candidate keeps its last answer, the valid
    one is written; the failure is logged and recorded."""
    with LoopbackServer() as srv:
        srv.push(reply(GOOD, SYNTAX), status(400, "This model's maximum context length is 8192 tokens"))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        with caplog.at_level(logging.WARNING, logger="qllm"):
            code, record = generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=2, rounds=1))
    assert "torch.ones(" in code and record["llm_errors"] == 1
    (error,) = record["rounds"][0]["llm_errors"]
    assert error["step"] == "round 0 candidate 1 repair 1" and "HTTP 400" in error["error"]
    assert record["rounds"][0]["candidates"][1]["attempts"][-1]["llm_error"] == error["error"]
    assert "the LLM call for round 0 candidate 1 repair 1 failed" in caplog.text
    json.dumps(record)  # the record is JSON (meta.json)


def test_a_failed_evaluator_falls_back_to_the_first_valid_candidate(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(reply(GOOD2, GOOD), status(500, "overloaded"))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        code, record = generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=2, rounds=1))
    selection = record["rounds"][0]["selection"]
    assert "0.5 * torch.ones" in code and selection["how"] == "the evaluator request failed: first valid candidate"
    assert record["rounds"][0]["llm_errors"][0]["step"] == "round 0 select 0"


def test_a_failed_advice_or_coder_call_keeps_the_best_so_far(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(reply(GOOD2), status(500, "advice down"), status(503, "coder down"))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        code, record = generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=1, rounds=2))
    assert "0.5 * torch.ones" in code and record["final_round"] == 0 and record["llm_errors"] == 2
    assert record["rounds"][0]["advice"] is None and record["rounds"][1]["candidates"] == []
    assert [e["step"] for r in record["rounds"] for e in r["llm_errors"]] == ["round 0 advice", "coder round 1"]


def test_the_first_coder_call_failing_is_the_generations_error(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(status(404, "no such model"))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        with pytest.raises(LLMRequestError, match="HTTP 404"):
            generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=1, rounds=2))


def test_a_huge_answer_is_not_sent_back_whole_and_escapes_never_reach_the_report(tmp_path, climbing_ctx):
    huge = "x = 1\n" * 100_000  # 600 kB, no entry point: refused as too long
    escaped = "```python\ndef tfcaf(state, n_agents):\n    return ((( \"\x1b[2J\x1b[31mOK\x1b[0m\"\n```"
    with LoopbackServer() as srv:
        srv.push(reply(f"```python\n{huge}```", escaped), reply(escaped), reply(escaped))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        with pytest.raises(TFCAFGenerationError) as e:
            generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=2, rounds=1, max_repairs=1))
        # candidate 0's repair conversation: its answer cut to MAX_SOURCE_CHARS, not sent whole
        echoed = srv.requests[1]["body"]["messages"][-2]["content"]
    assert len(echoed) < 110_000 and "characters cut" in echoed
    assert "\x1b" not in str(e.value) and "SyntaxError" in str(e.value)


def test_second_round_improves_the_reference_with_advice(tmp_path, climbing_ctx):
    with LoopbackServer() as srv:
        srv.push(reply(GOOD, GOOD2), reply("[1, 0]"), reply("Weight the agent that played 0 more."),
                 reply(GOOD2, GOOD), reply("2"))
        llm = make_llm(llm_config(srv, tmp_path), str(tmp_path))
        code, record = generate(llm, "TASK", climbing_ctx(False), LoopSettings(candidates=2, rounds=2))
        requests = list(srv.requests)
    improve = last_user(requests[3])
    assert "current best function" in improve and "torch.ones(" in improve and "played 0 more" in improve
    assert record["final_round"] == 1 and record["rounds"][0]["advice"].startswith("Weight")
    assert "0.5 * torch.ones" not in code  # round 1's evaluator chose candidate 2 = GOOD


def test_generate_command_writes_an_artifact_the_qllm_mixer_trains_with(tmp_path):
    with LoopbackServer() as srv:
        srv.push(reply(GOOD2, SYNTAX), reply(GOOD), reply("[1, 0]"))
        run_main(tmp_path, "qllm_generate", "climbing", "llm.backend=openai", f"llm.base_url={srv.base_url}",
                 "llm.model=scripted", f"llm.cache_dir={tmp_path / 'cache'}", "llm.max_retries=0",
                 "tfcaf_candidates=2", "tfcaf_rounds=1", "tfcaf_states=64", "igm_gate=False")
    (path,) = glob.glob(str(tmp_path / "tfcafs" / "climbing" / "*" / "tfcaf.py"))
    meta = json.load(open(records.meta_path(path)))
    assert meta["igm_gate"] is False and meta["llm"]["model"] == "scripted" and meta["ledger"]
    assert len(meta["rounds"][0]["candidates"]) == 2 and "climbing" in meta["prompts"]["task"]
    assert open(path).read().count("0.5 * torch.ones") == 1
    spec = load_tfcaf(path, env_config="climbing", n_agents=2, state_size=6, igm_gate=False)
    assert spec.trust == "signed record" and meta["validation_record"]["validation"]["ok"]
    assert sorted(os.listdir(os.path.dirname(path))) == ["llm_ledger.json", "llm_transcript.jsonl", "tfcaf.meta.json",
                                                          "tfcaf.py"]
    assert os.listdir(tmp_path / "tfcafs" / "climbing") == [os.path.basename(os.path.dirname(path))]  # no litter
    run_main(tmp_path / "train", "qllm", "climbing", f"tfcaf_path={path}", "igm_gate=False", "t_max=100",
             "test_interval=50", "test_nepisode=2", "log_interval=50", "runner_log_interval=50",
             "learner_log_interval=50", "batch_size=4", "buffer_size=8", "env_args.episode_limit=5",
             "save_model=False", "use_tensorboard=False", "epsilon_anneal_time=50")


def test_a_tampered_artifact_is_refused(tmp_path):
    with LoopbackServer() as srv:
        srv.push(reply(GOOD))
        run_main(tmp_path, "qllm_generate", "climbing", "llm.backend=openai", f"llm.base_url={srv.base_url}",
                 "llm.model=scripted", f"llm.cache_dir={tmp_path / 'cache'}", "tfcaf_candidates=1",
                 "tfcaf_rounds=1", "tfcaf_states=32")
    (path,) = glob.glob(str(tmp_path / "tfcafs" / "climbing" / "*" / "tfcaf.py"))
    with open(path, "a") as f:
        f.write("# edited\n")
    with pytest.raises(TFCAFLoadError, match="SHA-256 .* is not the one validated"):
        load_tfcaf(path, env_config="climbing", n_agents=2, state_size=6)


def test_a_generation_is_kept_when_its_record_cannot_be_signed(tmp_path, monkeypatch):
    """A paid-for generation is never lost to a signing problem (here: a key others can read): the artifact is
    written without a record, and training with it validates it again first."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    records.sign_record(sha256="x", env_config="climbing", igm_gate=False, form="tfcaf", n_agents=2, state_size=6,
                        validation={"ok": True})  # creates the key
    os.chmod(records.key_path(), 0o644)
    with LoopbackServer() as srv:
        srv.push(reply(GOOD))
        run_main(tmp_path, "qllm_generate", "climbing", "llm.backend=openai", f"llm.base_url={srv.base_url}",
                 "llm.model=scripted", f"llm.cache_dir={tmp_path / 'cache'}", "tfcaf_candidates=1",
                 "tfcaf_rounds=1", "tfcaf_states=32", "igm_gate=False")
    (path,) = glob.glob(str(tmp_path / "tfcafs" / "climbing" / "*" / "tfcaf.py"))
    meta = json.load(open(records.meta_path(path)))
    assert "validation_record" not in meta and meta["sha256"]
    with pytest.raises(TFCAFLoadError, match="record cannot be checked|no signed validation record"):
        load_tfcaf(path, env_config="climbing", n_agents=2, state_size=6)


GEN = ["llm.backend=openai", "llm.model=scripted", "llm.max_retries=0", "tfcaf_candidates=1", "tfcaf_rounds=1",
       "tfcaf_states=32", "tfcaf_max_repairs=1"]


def failed_records(tmp_path):
    """The generation folder's entries: exactly one `<id>.failed` JSON file and nothing else (no .tmp folder)."""
    entries = os.listdir(tmp_path / "tfcafs" / "climbing")
    assert len(entries) == 1 and entries[0].endswith(".failed"), entries
    path = tmp_path / "tfcafs" / "climbing" / entries[0]
    assert path.is_file()
    return json.loads(path.read_text())


def test_a_failed_generation_leaves_one_failed_record_and_no_temporary_folder(tmp_path):
    with LoopbackServer(responder=lambda body: "I cannot write code today.") as srv:  # garbage, every time
        for _ in range(2):  # a second failure beside the first: still nothing but records
            run_main(tmp_path, "qllm_generate", "climbing", *GEN, f"llm.base_url={srv.base_url}",
                     f"llm.cache_dir={tmp_path / 'cache'}", expect=1)
            if _ == 0:
                record = failed_records(tmp_path)
    names = sorted(os.listdir(tmp_path / "tfcafs" / "climbing"))
    assert len(names) == 2 and all(n.endswith(".failed") for n in names)
    assert record["why"] == "no candidate passed validation" and record["stage"].startswith("generating")
    assert record["error"].startswith("TFCAFGenerationError: no candidate passed validation")
    assert record["config"]["env_config"] == "climbing" and record["config"]["tfcaf_candidates"] == 1
    assert record["config"]["llm"]["model"] == "scripted" and record["config"]["llm"]["base_url"] == srv.base_url
    assert record["ledger"]["calls"] >= 2 and len(record["llm_calls"]) == record["ledger"]["calls"]
    assert "I cannot write code today." in json.dumps(record["llm_calls"]) and record["failed"]


def test_a_failed_generation_record_holds_no_secret(tmp_path, monkeypatch, capsys):
    """A server that echoes the key (and the Authorization header) in its 401: the key is cut out of the error
    everywhere the run keeps or prints it."""
    key = "sk-test-0123456789abcdef-secret"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with LoopbackServer() as srv:
        srv.push(status(401, message=f"Incorrect API key provided: {key} (header: Bearer {key})"))
        run_main(tmp_path, "qllm_generate", "climbing", *GEN, f"llm.base_url={srv.base_url}",
                 f"llm.cache_dir={tmp_path / 'cache'}", expect=1)
    record = failed_records(tmp_path)
    text = json.dumps(record)
    assert key not in text and "<redacted>" in record["error"] and record["stage"].startswith("generating")
    assert record["config"]["llm"]["base_url"] == srv.base_url and record["config"]["llm"]["api_key_env"] == \
        "OPENAI_API_KEY"
    written = [open(f, errors="replace").read() for f in glob.glob(str(tmp_path / "**" / "*"), recursive=True)
               if os.path.isfile(f)]
    out = capsys.readouterr()
    assert not any(key in w for w in written) and key not in out.out + out.err


@pytest.mark.parametrize("update", [
    "llm.base_url=http://user:sk-test-0123456789abcdef@127.0.0.1:9/v1",
    "llm.base_url=http://127.0.0.1:9/v1?api-key=sk-test-0123456789abcdef",
    "llm.api_key_env=sk-test-0123456789abcdef",
    "llm.api_key_env=Kf83hdkq0e9djfk20dkfmal3",  # a key without a known prefix: letters and digits, no underscore
])
def test_a_key_in_the_llm_settings_is_refused_before_anything_is_written(tmp_path, capsys, update):
    run_main(tmp_path, "qllm_generate", "climbing", *GEN, update, expect=2)
    err = capsys.readouterr().err
    assert err.startswith("config error: llm.") and len(err.strip().splitlines()) == 1
    assert "sk-test-0123456789abcdef" not in err and "Kf83hdkq0e9djfk20dkfmal3" not in err
    assert not os.listdir(tmp_path)  # no run folder, no config.json


def test_a_generation_that_fails_before_the_llm_leaves_a_record_too(tmp_path):
    run_main(tmp_path, "qllm_generate", "climbing", *GEN, "llm.base_url=http://127.0.0.1:9/v1",
             f"llm.cache_dir={tmp_path / 'cache'}", f"tfcaf_hint_path={tmp_path / 'missing_hint.txt'}", expect=1)
    record = failed_records(tmp_path)
    assert "missing_hint.txt" in record["error"] and record["ledger"] is None and record["llm_calls"] == []
