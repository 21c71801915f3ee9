"""QLLM's coder-evaluator loop (paper 002, section 4.2), with the error feedback the paper describes.

Per round: the coder writes K candidates from the same prompt; each is validated in the sandbox and a
failing one goes back to the coder with the validator's feedback, up to `max_repairs` times; the
evaluator picks one of the valid candidates (its answer is parsed leniently, re-asked once on garbage,
and the first valid candidate is taken if it still says nothing usable); the pick becomes the reference
the coder improves in the next round, with the evaluator's advice. Everything that happened is kept
for the artifact's record (tfcaf.meta.json).
"""
from dataclasses import dataclass, field

from qllm import prompts
from qllm.policy import extract_code
from qllm.validate import validate_source


class TFCAFGenerationError(RuntimeError):
    pass


@dataclass
class LoopSettings:
    candidates: int = 3   # K
    rounds: int = 2       # T
    max_repairs: int = 2  # feedback turns per candidate
    coder_temperature: float = 0.7
    evaluator_temperature: float = 0.0
    max_tokens: int = 1024


@dataclass
class Candidate:
    code: str
    report: dict
    attempts: list = field(default_factory=list)  # every answer and its validation, repairs included

    @property
    def ok(self):
        return self.report.get("ok", False)


def _validate(answer, ctx):
    code = extract_code(answer)
    if code is None:
        return None, {"ok": False, "stage": "parse", "errors": ["no Python code block found in the answer"]}, \
            "Your answer contained no Python code. Return the function in one ```python block."
    report = validate_source(code, ctx)
    return code, report.to_dict(), report.feedback()


def write_candidate(llm, messages, ctx, settings, tag, first_answer):
    """Validate one coder answer, feeding failures back until it passes or the repairs run out."""
    answer, history = first_answer, list(messages)
    attempts = []
    for repair in range(settings.max_repairs + 1):
        code, report, feedback = _validate(answer, ctx)
        attempts.append({"answer": answer, "report": report})
        if report["ok"] or repair == settings.max_repairs:
            break
        history += [{"role": "assistant", "content": answer},
                    {"role": "user", "content": prompts.repair_request(feedback)}]
        answer = llm.chat(history, n=1, temperature=settings.coder_temperature, max_tokens=settings.max_tokens,
                          tag=f"{tag} repair {repair + 1}")[0]
    return Candidate(code=code or "", report=report, attempts=attempts)


def choose(llm, evaluator_messages, candidates, settings, tag):
    """Index of the evaluator's pick among `candidates` (codes) and a record of how it was made."""
    if len(candidates) == 1:
        return 0, {"answers": [], "choice": 0, "how": "only one valid candidate"}
    history = evaluator_messages + [{"role": "user", "content": prompts.selection_request(candidates)}]
    answers = []
    for attempt in range(2):
        answer = llm.chat(history, n=1, temperature=settings.evaluator_temperature, max_tokens=256,
                          tag=f"{tag} select {attempt}")[0]
        answers.append(answer)
        index = prompts.parse_choice(answer, len(candidates))
        if index is not None:
            return index, {"answers": answers, "choice": index, "how": "evaluator"}
        history += [{"role": "assistant", "content": answer},
                    {"role": "user", "content": prompts.selection_reminder(len(candidates))}]
    return 0, {"answers": answers, "choice": 0, "how": "evaluator gave no usable choice twice: first valid candidate"}


def generate(llm, task, ctx, settings, log=None):
    """Run the loop; returns (chosen code, record for the artifact's tfcaf.meta.json). Raises TFCAFGenerationError
    when no round produced a valid candidate."""
    coder_system = prompts.role_prompt("coder", igm_gate=ctx.igm_gate)
    evaluator_system = prompts.role_prompt("evaluator")
    evaluator_messages = [{"role": "system", "content": evaluator_system}, {"role": "user", "content": task},
                          {"role": "assistant", "content": "Understood. I will answer in the form you ask for."}]
    reference, advice, rounds = None, None, []
    for t in range(settings.rounds):
        request = prompts.first_request() if reference is None else prompts.improve_request(reference, advice)
        messages = [{"role": "system", "content": coder_system},
                    {"role": "user", "content": f"{task}\n\n{request}"}]
        answers = llm.chat(messages, n=settings.candidates, temperature=settings.coder_temperature,
                           max_tokens=settings.max_tokens, tag=f"coder round {t}")
        candidates = [write_candidate(llm, messages, ctx, settings, f"round {t} candidate {k}", a)
                      for k, a in enumerate(answers)]
        valid = [c for c in candidates if c.ok]
        record = {"round": t, "request": request, "candidates": [vars(c) for c in candidates]}
        if log:
            log.info(f"QLLM round {t}: {len(valid)}/{len(candidates)} candidates passed validation")
        if valid:
            index, selection = choose(llm, evaluator_messages, [c.code for c in valid], settings, f"round {t}")
            reference = valid[index].code
            record.update(selection=selection, chosen=candidates.index(valid[index]))
            if t < settings.rounds - 1:
                advice = llm.chat(evaluator_messages + [{"role": "user",
                                                         "content": prompts.advice_request(reference)}],
                                  n=1, temperature=settings.evaluator_temperature, max_tokens=400,
                                  tag=f"round {t} advice")[0]
                record["advice"] = advice
        rounds.append(record)
    if reference is None:
        reports = [c["report"] for r in rounds for c in r["candidates"]]
        reasons = "; ".join(sorted({f"{r.get('stage')}: {(r.get('errors') or ['?'])[0][:120]}" for r in reports}))
        raise TFCAFGenerationError(
            f"no candidate passed validation in {settings.rounds} round(s) of {settings.candidates} "
            f"candidates with {settings.max_repairs} repairs each. Failures: {reasons}. Try more repairs or "
            f"candidates, a stronger model, or a hint file (tfcaf_hint_path).")
    final_round = max(r["round"] for r in rounds if "chosen" in r)
    return reference, {"rounds": rounds, "final_round": final_round,
                       "prompts": {"coder_system": coder_system, "evaluator_system": evaluator_system,
                                   "task": task}}
