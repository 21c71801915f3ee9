"""Run mode `tfcaf`: generate a TFCAF with the coder-evaluator loop and write it as an artifact.

    python src/main.py --config=qllm_generate --env-config=lbf with llm.backend=local

writes results/tfcafs/<env>/<id>/tfcaf.py and meta.json (prompts, model, every candidate with its
validation report, the evaluator's choices, and the validation record of tfcaf.py signed with this
installation's key (qllm.records), which lets `mixer: qllm` train with it without validating it again).
The folder is assembled under a temporary name (utils.files.temp_path) and renamed when complete; a failed
generation is kept as <id>.failed with its LLM transcript (answers are also in the LLM cache, so a rerun pays
nothing twice).
"""
import os
import platform
from datetime import datetime, timezone
from types import SimpleNamespace

from envs import env_from_args
from llm import make_llm
from qllm import prompts, records
from qllm.loop import LoopSettings, generate
from qllm.states import sample_states
from qllm.validate import ValidationContext
from utils.files import clean_stale_temps, temp_path
from utils.paths import env_label, results_path


def run_tfcaf(_run, config, _log):
    label = env_label(config)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    root = os.path.join(results_path(config), "tfcafs", label)
    final_dir = os.path.join(root, stamp)
    clean_stale_temps(root)  # folders of generations killed mid-way
    work_dir = temp_path(final_dir)  # names this process, so a later run can tell a dead writer's litter
    os.makedirs(work_dir)

    env_args = dict(config["env_args"], seed=config["seed"])
    env = env_from_args(SimpleNamespace(**config), seed=config["seed"])
    task = prompts.task_prompt(env, prompts.read_hint(config["tfcaf_hint_path"]))
    igm_gate = bool(config["igm_gate"])
    _log.info(f"Sampling {config['tfcaf_states']} validation states from {config['env']} rollouts")
    states = sample_states(config["env"], env_args, n=config["tfcaf_states"], seed=config["seed"])
    ctx = ValidationContext(n_agents=env.n_agents, state_size=env.get_state_size(), states=states,
                            igm_gate=igm_gate)
    settings = LoopSettings(candidates=config["tfcaf_candidates"], rounds=config["tfcaf_rounds"],
                            max_repairs=config["tfcaf_max_repairs"], max_tokens=config["llm"]["max_tokens"],
                            coder_temperature=config["llm"]["temperature"])
    env.close()
    llm = make_llm(config["llm"], work_dir)
    meta = {"created": datetime.now(timezone.utc).isoformat(), "source": "llm (coder-evaluator loop)",
            "env": config["env"], "env_args": config["env_args"], "env_label": label, "n_agents": ctx.n_agents,
            "state_size": ctx.state_size, "igm_gate": igm_gate, "settings": vars(settings),
            "llm": {k: config["llm"][k] for k in ("backend", "model", "base_url")},
            "python": platform.python_version()}
    try:
        code, record = generate(llm, task, ctx, settings, log=_log)
    except Exception as e:
        meta.update(error=f"{type(e).__name__}: {e}", ledger=llm.ledger())
        records.write_meta(os.path.join(work_dir, records.TFCAF_FILE), meta)
        os.replace(work_dir, os.path.join(root, f"{stamp}.failed"))
        raise
    finally:
        llm.close()
    tfcaf_file, digest = records.write_tfcaf(work_dir, code.strip() + "\n")
    final = record["rounds"][record["final_round"]]
    meta.update(record, ledger=llm.ledger())
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
    _log.info(f"TFCAF written to {path}\nTrain with: python src/main.py --config=qllm --env-config=<env> "
              f"with tfcaf_path={path} igm_gate={igm_gate}")
    if _run is not None:
        _run.info["tfcaf_path"] = path
        _run.info["llm_ledger"] = meta["ledger"]
    return path
