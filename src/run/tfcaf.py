"""Run mode `tfcaf`: generate a TFCAF with the coder-evaluator loop and write it as an artifact.

    python src/main.py --config=qllm_generate --env-config=lbf with llm.backend=local

writes results/tfcafs/<env>/<id>/tfcaf.py and its record tfcaf.meta.json (prompts, model, every candidate with
its validation report, the evaluator's choices, and the validation record of tfcaf.py signed with this
installation's key (qllm.records), which lets `mixer: qllm` train with it without validating it again), plus
llm_transcript.jsonl and llm_ledger.json. (Folders written before issue 12 hold meta.json instead; they still
load.) The folder is assembled under a temporary name (utils.files.temp_path) and renamed when complete.

A failed generation leaves exactly one file, results/tfcafs/<env>/<id>.failed: a JSON record of when, why, the
error, the config it ran with (no secrets: the API key is never in a config, and is cut out of error texts), the
token ledger and the LLM calls made; its temporary folder is removed. The answers are also in the LLM cache, so a
rerun pays nothing twice.
"""
import json
import os
import platform
from datetime import datetime, timezone
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

from envs import env_from_args
from llm import make_llm
from qllm import prompts, records
from qllm.loop import LoopSettings, TFCAFGenerationError, generate
from qllm.states import sample_states
from qllm.validate import ValidationContext
from utils.files import clean_stale_temps, remove, temp_path, write_json_atomic
from utils.paths import env_label, results_path

FAILED_SUFFIX = ".failed"
TRANSCRIPT = "llm_transcript.jsonl"


def run_tfcaf(_run, config, _log):
    label = env_label(config)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    root = os.path.join(results_path(config), "tfcafs", label)
    final_dir = os.path.join(root, stamp)
    clean_stale_temps(root)  # folders of generations killed mid-way
    work_dir = temp_path(final_dir)  # names this process, so a later run can tell a dead writer's litter
    os.makedirs(work_dir)
    progress = {"stage": "building the env"}  # what a failure record can tell: where it stopped, the LLM's ledger
    try:
        path = _generate(config, label, work_dir, final_dir, progress, _log)
    except BaseException as e:
        failed = os.path.join(root, stamp + FAILED_SUFFIX)
        try:
            write_json_atomic(failed, failure_record(config, e, progress, work_dir))
        except OSError as write_error:
            _log.error(f"could not write the failure record {failed}: {write_error}")
        else:
            _log.error(f"TFCAF generation failed while {progress['stage']}; what happened is recorded in {failed}")
            if _run is not None:
                _run.info["tfcaf_failed"] = failed
        raise
    finally:
        remove(work_dir)  # renamed into place on success; litter otherwise
    if _run is not None:
        _run.info["tfcaf_path"] = path
        _run.info["llm_ledger"] = progress["ledger"]
    return path


def _generate(config, label, work_dir, final_dir, progress, _log):
    env_args = dict(config["env_args"], seed=config["seed"])
    env = env_from_args(SimpleNamespace(**config), seed=config["seed"])
    task = prompts.task_prompt(env, prompts.read_hint(config["tfcaf_hint_path"]))
    igm_gate = bool(config["igm_gate"])
    progress["stage"] = "sampling validation states"
    _log.info(f"Sampling {config['tfcaf_states']} validation states from {config['env']} rollouts")
    states = sample_states(config["env"], env_args, n=config["tfcaf_states"], seed=config["seed"])
    ctx = ValidationContext(n_agents=env.n_agents, state_size=env.get_state_size(), states=states,
                            igm_gate=igm_gate)
    settings = LoopSettings(candidates=config["tfcaf_candidates"], rounds=config["tfcaf_rounds"],
                            max_repairs=config["tfcaf_max_repairs"], max_tokens=config["llm"]["max_tokens"],
                            coder_temperature=config["llm"]["temperature"])
    env.close()
    progress["stage"] = "starting the LLM"
    llm = make_llm(config["llm"], work_dir)
    meta = {"created": datetime.now(timezone.utc).isoformat(), "source": "llm (coder-evaluator loop)",
            "env": config["env"], "env_args": config["env_args"], "env_label": label, "n_agents": ctx.n_agents,
            "state_size": ctx.state_size, "igm_gate": igm_gate, "settings": vars(settings),
            "llm": llm_summary(config["llm"]), "python": platform.python_version()}
    try:
        progress["stage"] = "generating (the coder-evaluator loop)"
        code, record = generate(llm, task, ctx, settings, log=_log)
    finally:
        progress["ledger"] = llm.ledger()
        llm.close()  # writes llm_ledger.json into work_dir: before the folder is renamed or removed
    progress["stage"] = "writing the artifact"
    tfcaf_file, digest = records.write_tfcaf(work_dir, code.strip() + "\n")
    final = record["rounds"][record["final_round"]]
    meta.update(record, ledger=progress["ledger"])
    try:
        records.record_validation(meta, sha256=digest, env_config=config["env_config"], igm_gate=igm_gate,
                                  n_agents=ctx.n_agents, state_size=ctx.state_size,
                                  validation=final["candidates"][final["chosen"]]["report"])
    except (OSError, records.RecordKeyError) as e:  # the generation was paid for: keep it; training validates again
        _log.warning(f"the validation record could not be signed ({e}); the TFCAF is kept, and training with it "
                     f"validates it again first")
    records.write_meta(tfcaf_file, meta)
    os.replace(work_dir, final_dir)
    path = os.path.join(final_dir, records.TFCAF_FILE)
    _log.info(f"TFCAF written to {path} (its record: {records.meta_path(path)})\nTrain with: python src/main.py "
              f"--config=qllm --env-config={config['env_config'] or '<env>'} with tfcaf_path={path} "
              f"igm_gate={igm_gate}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# The record of a failed generation


def _without_userinfo(url):
    """A URL without user:password@ and without its query (where keys are sometimes passed)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "") if parts.username or parts.password else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def llm_summary(llm_config):
    """The `llm:` settings worth recording (no secrets: the key is named by `api_key_env`, never held)."""
    out = {k: llm_config.get(k) for k in ("backend", "model", "api_key_env", "max_tokens", "temperature")}
    out["base_url"] = _without_userinfo(llm_config.get("base_url")) if llm_config.get("base_url") else None
    return out


def _secrets(config):
    """Values that must not appear in a record: the API key (from the variable `llm.api_key_env` names)."""
    name = (config.get("llm") or {}).get("api_key_env")
    value = os.environ.get(name) if isinstance(name, str) and name else None
    return [value] if value and len(value) >= 4 else []


def _scrub(text, secrets):
    for s in secrets:
        text = text.replace(s, "<redacted>")
    return text


def _why(error, stage):
    if isinstance(error, TFCAFGenerationError):
        return "no candidate passed validation"
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted while {stage}"
    return f"an error while {stage}"


def _transcript(work_dir, secrets):
    path = os.path.join(work_dir, TRANSCRIPT)
    calls = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    calls.append(json.loads(_scrub(line, secrets)))
                except ValueError:
                    continue
    except OSError:
        pass
    return calls


def failure_record(config, error, progress, work_dir):
    """The JSON record of a failed generation: when, why, the error, the config summary, the LLM ledger and calls."""
    secrets = _secrets(config)
    return {
        "failed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "why": _why(error, progress.get("stage", "?")),
        "stage": progress.get("stage"),
        "error": _scrub(f"{type(error).__name__}: {error}", secrets),
        "config": {"env_config": config.get("env_config"), "env": config.get("env"),
                   "env_args": config.get("env_args"), "seed": config.get("seed"), "igm_gate": config.get("igm_gate"),
                   **{k: config.get(k) for k in ("tfcaf_candidates", "tfcaf_rounds", "tfcaf_max_repairs",
                                                 "tfcaf_states", "tfcaf_hint_path")},
                   "llm": llm_summary(config.get("llm") or {})},
        "ledger": progress.get("ledger"),
        "llm_calls": _transcript(work_dir, secrets),
        "note": "the LLM's answers are also in its cache (llm.cache_dir): a rerun with the same settings pays for "
                "nothing twice",
    }
