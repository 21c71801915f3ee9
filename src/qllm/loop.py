"""QLLM's coder-evaluator loop (paper 002, section 4.2), with the error feedback the paper describes.

Per round: the coder writes K candidates from the same prompt; each is validated in the sandbox and a
failing one goes back to the coder with the validator's feedback, up to `max_repairs` times; the
evaluator picks one of the valid candidates (its answer is parsed leniently, re-asked once on garbage,
and the first valid candidate is taken if it still says nothing usable); the pick becomes the reference
the coder improves in the next round, with the evaluator's advice. Everything that happened is kept
for the artifact's record (tfcaf.meta.json).

A failed LLM call (an LLMError after the client's retries: HTTP 400 on a long repair conversation, a 500 from the
evaluator) ends only its own step: a repair that fails leaves its candidate with its last answer, a failed
evaluator call picks the first valid candidate (as a garbage answer does), a failed advice call leaves the next
round without advice, a failed coder call loses that round. Each is logged and recorded (`llm_errors` of its round
and the count in the record); the generation fails only when no valid candidate came out of any round. A budget
stop, a replay cache miss and Ctrl-C are not step failures: they end the generation.
"""
import logging
from dataclasses import dataclass, field

from llm import LLMBudgetExceeded, LLMCacheMiss, LLMCancelled, LLMError
from qllm import prompts
from qllm.policy import MAX_SOURCE_CHARS, extract_code
from qllm.validate import validate_source

_log = logging.getLogger("qllm")
# errors that end the generation instead of one step (nothing later could be asked either)
FATAL = (LLMBudgetExceeded, LLMCacheMiss, LLMCancelled)


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


class _Errors(list):
    """The LLM failures of a round: [{"step", "error"}], each logged once (to the run's log where given)."""

    def __init__(self, log=None):
        super().__init__()
        self.log = log or _log

    def add(self, step, error, then):
        if isinstance(error, FATAL) or not isinstance(error, LLMError):
            raise error
        text = f"{type(error).__name__}: {str(error)[:500]}"
        self.append({"step": step, "error": text})
        self.log.warning(f"QLLM: the LLM call for {step} failed ({text[:300]}); {then}")


def _echo(answer):
    """An answer as it goes back to the coder in a repair conversation: whole, unless it is longer than any
    function may be (MAX_SOURCE_CHARS), which is cut (its start and end kept) instead of being sent back whole."""
    if len(answer) <= MAX_SOURCE_CHARS:
        return answer
    half = MAX_SOURCE_CHARS // 2
    return f"{answer[:half]}\n... [{len(answer) - 2 * half} characters cut] ...\n{answer[-half:]}"


def write_candidate(llm, messages, ctx, settings, tag, first_answer, errors=None):
    """Validate one coder answer, feeding failures back until it passes or the repairs run out (or a repair request
    fails: the candidate keeps its last answer, the failure goes to `errors`)."""
    errors = _Errors() if errors is None else errors
    answer, history = first_answer, list(messages)
    attempts = []
    for repair in range(settings.max_repairs + 1):
        code, report, feedback = _validate(answer, ctx)
        attempts.append({"answer": answer, "report": report})
        if report["ok"] or repair == settings.max_repairs:
            break
        history += [{"role": "assistant", "content": _echo(answer)},
                    {"role": "user", "content": prompts.repair_request(feedback)}]
        try:
            answer = llm.chat(history, n=1, temperature=settings.coder_temperature, max_tokens=settings.max_tokens,
                              tag=f"{tag} repair {repair + 1}")[0]
        except LLMError as e:
            errors.add(f"{tag} repair {repair + 1}", e, "that candidate keeps its last answer")
            attempts[-1]["llm_error"] = errors[-1]["error"]
            break
    return Candidate(code=code or "", report=report, attempts=attempts)


def choose(llm, evaluator_messages, candidates, settings, tag, errors=None):
    """Index of the evaluator's pick among `candidates` (codes) and a record of how it was made."""
    errors = _Errors() if errors is None else errors
    if len(candidates) == 1:
        return 0, {"answers": [], "choice": 0, "how": "only one valid candidate"}
    history = evaluator_messages + [{"role": "user", "content": prompts.selection_request(candidates)}]
    answers = []
    for attempt in range(2):
        try:
            answer = llm.chat(history, n=1, temperature=settings.evaluator_temperature, max_tokens=256,
                              tag=f"{tag} select {attempt}")[0]
        except LLMError as e:
            errors.add(f"{tag} select {attempt}", e, "the first valid candidate is taken")
            return 0, {"answers": answers, "choice": 0,
                       "how": "the evaluator request failed: first valid candidate"}
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
        errors = _Errors(log)
        record = {"round": t, "request": request, "candidates": [], "llm_errors": errors}
        rounds.append(record)
        try:
            answers = llm.chat(messages, n=settings.candidates, temperature=settings.coder_temperature,
                               max_tokens=settings.max_tokens, tag=f"coder round {t}")
        except LLMError as e:
            if t == 0:  # nothing in hand yet: the error is the generation's (e.g. a wrong llm.base_url or key)
                raise
            errors.add(f"coder round {t}", e, "this round is lost; the best function so far is kept")
            continue
        candidates = [write_candidate(llm, messages, ctx, settings, f"round {t} candidate {k}", a, errors)
                      for k, a in enumerate(answers)]
        valid = [c for c in candidates if c.ok]
        record["candidates"] = [vars(c) for c in candidates]
        if log:
            log.info(f"QLLM round {t}: {len(valid)}/{len(candidates)} candidates passed validation"
                     + (f" ({len(errors)} LLM call(s) failed: see llm_errors in the record)" if errors else ""))
        if valid:
            index, selection = choose(llm, evaluator_messages, [c.code for c in valid], settings, f"round {t}",
                                      errors)
            reference = valid[index].code
            record.update(selection=selection, chosen=candidates.index(valid[index]))
            advice = None
            if t < settings.rounds - 1:
                try:
                    advice = llm.chat(evaluator_messages + [{"role": "user",
                                                             "content": prompts.advice_request(reference)}],
                                      n=1, temperature=settings.evaluator_temperature, max_tokens=400,
                                      tag=f"round {t} advice")[0]
                except LLMError as e:
                    errors.add(f"round {t} advice", e, "the next round improves the function without advice")
                record["advice"] = advice
    for record in rounds:
        record["llm_errors"] = list(record["llm_errors"])
    failed_calls = sum(len(r["llm_errors"]) for r in rounds)
    if reference is None:
        reports = [c["report"] for r in rounds for c in r["candidates"]]
        reasons = "; ".join(sorted({f"{r.get('stage')}: {(r.get('errors') or ['?'])[0][:120]}" for r in reports}))
        calls = "; ".join(f"{e['step']}: {e['error'][:200]}" for r in rounds for e in r["llm_errors"][:2])
        raise TFCAFGenerationError(
            f"no candidate passed validation in {settings.rounds} round(s) of {settings.candidates} "
            f"candidates with {settings.max_repairs} repairs each. Failures: {reasons or 'none validated'}"
            + (f". {failed_calls} LLM call(s) failed: {calls}" if failed_calls else "")
            + ". Try more repairs or candidates, a stronger model, or a hint file (tfcaf_hint_path).")
    final_round = max(r["round"] for r in rounds if "chosen" in r)
    return reference, {"rounds": rounds, "final_round": final_round, "llm_errors": failed_calls,
                       "prompts": {"coder_system": coder_system, "evaluator_system": evaluator_system,
                                   "task": task}}
