"""Labeler `llm`: a language model answers a task's items (MisoDICE B.2.2), through the project's LLM layer.

How an item is answered:
- The prompt: for trajectory_preference, labeling/prompting.py (env description + our role prompt, two episode
  summaries from env.describe_episode, rewards hidden unless prompt_show_reward); other tasks bring their own
  (task.messages / task.parse). Every prompt is token-estimated before anything is sent (context window check).
- `swap_order`: the item is asked in both orders; the answers (in the stored order) agreeing give the label, a
  disagreement gives a tie (0.5); the position-bias rate is reported. One order unreadable: the other decides.
- The reply is parsed (labeling/parse.py); unreadable -> asked once more (the reply and a short reminder appended)
  -> still unreadable: the item stays unlabeled (NaN). Never filled in from the oracle.
- Items run concurrently (LLM.chat_many, bounded by llm.concurrency and llm.local.parallel); each answer is a
  function of its own request only, so the labels do not depend on the concurrency.
- Failures: an LLMError after the client's retries (timeouts, 429, 5xx, refused requests) leaves that item
  unlabeled and the run goes on; a replay cache miss, max_requests or max_cost_usd stops starting new requests
  (the ones in flight finish), keeps every answer so far, and names the reason in info["stopped"]. max_requests
  counts HTTP requests as sent (retries, re-asks and per-sample requests included: LLM.set_budget), so it is never
  exceeded. Ctrl-C ends the requests in flight at once (LLM.cancel) and keeps the answers so far.
- A reply that is empty, or cut by llm.max_tokens (finish_reason=length), and gives no answer even after the re-ask
  is not final: it is not journaled (info["cut"] counts the items). The LLM cache keeps a cut reply (paid for) but
  not an empty one: a rerun asks the empty ones again and gets the cut ones from the cache, so raise llm.max_tokens
  if they were cut. A reply no parser can read is unparsed, never an error.
- Resume: answers are in the LLM cache and in an append-only journal (labeling/journal.py); a rerun with the same
  settings asks only the items missing from it. A journal line that is not a valid answer of its item (a damaged
  file: a string answer, a missing field, a value the task cannot give) is skipped with a warning and re-asked.
- K queries per item (a task whose `queries(args)` is an int K, e.g. lca_state_pair): one request with n=K, so the
  K answers are K distinct cache entries (sample indices 0..K-1 of the same request); each unreadable sample is
  re-asked once on its own (samples with the same unreadable reply share one re-ask request with n = their count,
  so they stay distinct samples); answers [N, K]; the journal line holds the K answers once all are final. At
  temperature 0 the K samples are copies of one answer: a warning says so.
"""
import logging
import math
import os

import numpy as np

from labeling.base import Labeler, LabelResult, answer_counts
from labeling.journal import Journal
from labeling.parse import PREFERENCE_LABEL, parse_choice
from labeling.prompting import FORMATS, TaskPrompt, check_fits, context_window, sha256
from llm import LLMBudgetExceeded, LLMCacheMiss, LLMCancelled, LLMError, make_llm
from llm.cache import canonical_json, request_identity
from llm.config import check_cost_budget, local_model_name, resolve
from llm.text_utils import incomplete
from utils.config import ConfigError
from utils.paths import results_path
from utils.progress import Bar

log = logging.getLogger("labeling")
REPLY_KEEP = 2000  # characters of each reply kept in the journal (the transcript has them whole)


def answer_format(args, cfg):
    """json (schema-constrained answer) or text (last line #k). auto: json where the backend is known to accept
    json_schema (the local llama.cpp server, and replay of its answers), text otherwise."""
    fmt = args.answer_format
    if fmt == "auto":
        local = cfg["backend"] == "local" or (cfg["backend"] == "replay"
                                              and cfg["model"] == local_model_name(cfg["local"]["model_path"]))
        return "json" if local else "text"
    if fmt not in FORMATS:
        raise ConfigError(f"answer_format must be auto, json or text, got {fmt!r}")
    return fmt


class LLMLabeler(Labeler):
    name = "llm"

    def __init__(self, args):
        super().__init__(args)
        self.cfg = resolve(args.llm)
        check_cost_budget(self.cfg, args.max_cost_usd)
        self.fmt = answer_format(args, self.cfg)

    def settings(self):
        c, a = self.cfg, self.args
        return {"labeler": self.name, "model": c["model"], "temperature": c["temperature"], "top_p": c["top_p"],
                "seed": c["seed"], "max_tokens": c["max_tokens"], "answer_format": self.fmt,
                "swap_order": bool(a.swap_order), "prompt_show_reward": bool(a.prompt_show_reward),
                "summary_max_steps": int(a.summary_max_steps)}

    def journal_path(self, source):
        if self.args.label_journal:
            return self.args.label_journal
        root = results_path({"local_results_path": self.args.local_results_path})
        return os.path.join(root, "labels", source.fingerprint[:16], f"{self.args.label_name}.journal.jsonl")

    # --- the prompt of a task ---
    def prompter(self, task, source):
        """The task's prompt object (messages(item, swapped), reask, response_format, parse); ConfigError naming
        the oracle labelers when the env cannot describe itself."""
        try:
            return task.prompter(source, self.args, self.fmt)
        except NotImplementedError as e:
            raise ConfigError(f"labeler=llm needs an env that describes itself for its prompts (describe_task, "
                              f"describe_episode) and a task with a prompt: {e}. Use labeler=oracle (the "
                              f"ground-truth rule) or labeler=noisy_oracle (right with probability "
                              f"oracle_accuracy) instead") from None

    def label(self, task, items, source, bar=None):
        a, c = self.args, self.cfg
        prompt = self.prompter(task, source)
        queries = task.queries(a)
        if queries is not None and int(queries) > 1 and c["temperature"] == 0:
            log.warning(f"llm labeler: {queries} queries per item at llm.temperature=0 are copies of one answer (a "
                        f"deterministic server gives the same reply K times); set llm.temperature > 0 (e.g. 0.5, as "
                        f"the LCA predecessor) for independent votes")
        orders = (False, True) if a.swap_order and task.swappable else (False,)
        window = context_window(c, a.context_tokens)
        sampling = {"temperature": c["temperature"], "max_tokens": c["max_tokens"],
                    "response_format": prompt.response_format()}
        asks, hashes = {}, []
        for k, item in enumerate(items):
            msgs = [prompt.messages(item, o) for o in orders]
            for o, m in zip(orders, msgs):
                check_fits(m, window, c["max_tokens"], a.summary_max_steps, f"item {item.id}")
                asks[k, o] = m
            idents = [request_identity(c["model"], m, c["temperature"], c["max_tokens"], c["top_p"], c["seed"],
                                       sampling["response_format"]) for m in msgs]
            hashes.append(sha256(canonical_json(idents if queries is None else {"requests": idents,
                                                                                "queries": int(queries)})))
        run = _Run(self, task, items, prompt, orders, asks, hashes, sampling, self.journal_path(source), bar, queries)
        return run.go(c)


class _Run:
    """One label() call: the journal, the requests in two rounds (asks, then re-asks), the counts."""

    def __init__(self, labeler, task, items, prompt, orders, asks, hashes, sampling, journal_path, bar,
                 queries=None):
        self.lab, self.task, self.items, self.prompt = labeler, task, items, prompt
        self.orders, self.asks, self.hashes, self.sampling = orders, asks, hashes, sampling
        self.journal = Journal(journal_path)
        self.multi = queries is not None  # K answers per item: answers [N, K], journal answers lists
        self.n = int(queries) if self.multi else 1
        self.answers = np.full((len(items), self.n) if self.multi else len(items), np.nan)
        # item index -> {(order, sample): (raw choice, label or None, how, reply)} / "failed" / "cut" / "journaled"
        self.state = {}
        self.counts = dict.fromkeys(("from_journal", "reasked", "reask_recovered", "unparsed", "failed",
                                     "cut", "journal_invalid", "swap_disagreements", "swap_both_parsed",
                                     "position_same", "first_position", "non_tie_choices"), 0)
        self.errors, self.stopped = [], None
        self.asked = set()  # items asked in this run: a call answered (the cache included) or that sent a request
        self.bar, self.own_bar = bar, bar is None
        self.llm = None

    # --- flow ---
    def go(self, cfg):
        todo = self._resume()
        if self.own_bar:
            self.bar = Bar(total=len(self.items), initial=len(self.items) - len(todo), desc="llm labels",
                           unit="item")
        elif len(self.items) - len(todo):
            self.bar.update(len(self.items) - len(todo))
        if self.multi or len(todo) < len(self.items):
            log.info(f"llm labeler: {len(self.items) - len(todo)} of {len(self.items)} items answered in the journal; "
                     f"asking {len(todo) * self.n * len(self.orders)} queries for the other {len(todo)} (the LLM "
                     f"cache answers those it holds)")
        try:
            if todo:
                self.llm = make_llm(self.lab.args.llm, os.path.dirname(os.path.abspath(self.journal.path)))
                self.llm.set_budget(self.lab.args.max_requests, self.lab.args.max_cost_usd)
                samples = tuple(range(self.n))
                reasks = self._round([(k, o, samples, self.asks[k, o], "ask") for k in todo for o in self.orders])
                self._round([r for r in reasks if self.state.get(r[0]) != "failed"])
        except KeyboardInterrupt:  # Ctrl-C: end the requests in flight now; the answers so far are journaled
            if self.llm is not None:
                self.llm.cancel()
            log.warning(f"llm labeler: interrupted; the answers so far are kept (journal {self.journal.path}, LLM "
                        f"cache): rerun the same command to ask the rest")
            raise
        finally:
            self.journal.close()
            if self.llm is not None:
                self.llm.close()
            if self.own_bar:
                self.bar.close()
        return LabelResult(self.answers, self._info(cfg, todo))

    def _resume(self):
        done = self.journal.read()
        todo = []
        for k, item in enumerate(self.items):
            entry = done.get(item.id)
            if entry is not None and entry.get("request") == self.hashes[k]:
                if not self._valid(entry, item):
                    self.counts["journal_invalid"] += 1
                    todo.append(k)
                    continue
                if self.multi:
                    self.answers[k] = [np.nan if v is None else v for v in entry["answer"]]
                else:
                    self.answers[k] = np.nan if entry["answer"] is None else entry["answer"]
                self._count(entry)
                self.counts["from_journal"] += 1
            else:
                todo.append(k)
        if self.counts["journal_invalid"]:
            log.warning(f"llm labeler: {self.counts['journal_invalid']} line(s) of the journal {self.journal.path} are "
                        f"not valid answers of their items (a damaged file?); those items are asked again")
        return todo

    def _valid(self, entry, item):
        """Whether a journal line for `item` is an answer this run could have written: answers (and per-order
        labels) None or a value the task can give (task.answer_values; any finite number where it names none),
        choices and labels one per order, K of each for a task with K queries."""
        allowed = self.task.answer_values(item, self.lab.args)
        # asked in both orders, a disagreement is a tie (0.5), whatever the task's own answers
        tie = (0.5,) if len(self.orders) == 2 and allowed is not None else ()

        def value(v, extra=()):
            if v is None:
                return True
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return False
            return allowed is None or float(v) in allowed or float(v) in extra

        def orders(sample):
            return isinstance(sample, dict) and all(
                isinstance(sample.get(key), list) and len(sample[key]) == len(self.orders) for key in
                ("labels", "choices")) and all(value(v) for v in sample["labels"])

        answer = entry.get("answer")
        if self.multi:
            samples = entry.get("samples")
            return (isinstance(answer, list) and len(answer) == self.n and all(value(v, tie) for v in answer)
                    and isinstance(samples, list) and len(samples) == self.n and all(orders(x) for x in samples))
        return "answer" in entry and value(answer, tie) and orders(entry)

    def _round(self, reqs):
        """Run requests [(item index, order, sample indices, messages, kind)] (one call with n = len(samples));
        returns the re-asks the unreadable replies need."""
        if not reqs:
            return []
        calls = [{"messages": m, "n": len(js), "tag": f"label:{self.task.name}:{kind}", **self.sampling}
                 for _, _, js, m, kind in reqs]
        reasks = []
        many = self.llm.chat_many(calls, stop=lambda i: self._stop(calls[i], reqs[i][0]))
        try:
            for idx, out in many:
                reasks += self._answered(reqs[idx], out)
        except KeyboardInterrupt:
            self.llm.cancel()  # before the pool is joined (many.close)
            raise
        finally:
            many.close()
        return reasks

    def _answered(self, req, out):
        """Take one call's answers (or its error); returns the re-asks its unreadable replies need."""
        k, o, js, msgs, kind = req
        stop = isinstance(out, (LLMBudgetExceeded, LLMCacheMiss, LLMCancelled))
        if not (stop and getattr(out, "sent", 0) == 0):  # answered (cache included) or something was sent
            self.asked.add(k)
        if stop:  # a stop: the item is not failed
            self._set_stop(f"replay cache miss: {out}" if isinstance(out, LLMCacheMiss) else str(out))
            return []
        if isinstance(out, LLMError):
            self._fail(k, out)
            return []
        if self.state.get(k) == "failed":  # the item's other order failed: it stays unlabeled
            return []
        unread = {}  # re-ask conversation -> the samples whose unreadable reply it repeats
        for j, text in zip(js, out):
            label, how, raw = self._parse(text, k, o)
            if label is None and kind == "ask":
                self.counts["reasked"] += 1
                again = self.prompt.reask(msgs, text)
                unread.setdefault(canonical_json(again), (again, []))[1].append(j)
                continue
            self.counts["reask_recovered"] += label is not None and kind == "reask"
            self.state.setdefault(k, {})[o, j] = (raw, label, how if kind == "ask" else f"reask:{how}", text)
        if isinstance(self.state.get(k), dict):
            self._maybe_finish(k)
        return [(k, o, tuple(group), again, "reask") for again, group in unread.values()]

    def _parse(self, text, k, swapped):
        """(label in the item's stored order or None, how, the raw choice as asked). Never raises for a reply: one
        no parser can read is unparsed (the reply is untrusted input)."""
        item = self.items[k]
        try:
            if isinstance(self.prompt, TaskPrompt):  # a task's own answers have no positions to count
                label, how = self.prompt.parse(text, item)
                raw = None
            else:
                p = parse_choice(text)
                raw, how = p.value, p.how
                label = None if raw is None else PREFERENCE_LABEL[raw]
            if label is not None and swapped:
                label = self.task.unswap(label)
            if label is not None and not (isinstance(label, (int, float)) and math.isfinite(label)):
                raise ValueError(f"the parser gave {label!r}")
        except Exception as e:  # noqa: BLE001 (any reply, any parser: unparsed, never a crash)
            log.warning(f"llm labeler: a reply for item {item.id} could not be read ({type(e).__name__}); it counts "
                        f"as unparsed")
            return None, f"unreadable ({type(e).__name__})", None
        return label, how, raw

    def _set_stop(self, why):
        if self.stopped is None:
            self.stopped = why
            log.warning(f"llm labeler: stopping, {why}; the answers so far are kept (journal {self.journal.path}); "
                        f"rerun to ask the rest")

    def _fail(self, k, error):
        if len(self.errors) < 5:
            self.errors.append(f"{self.items[k].id}: {type(error).__name__}: {str(error)[:300]}")
        if self.state.get(k) != "failed":
            self.state[k] = "failed"
            self.counts["failed"] += 1
            self._progress()

    def _maybe_finish(self, k):
        got = self.state[k]
        if got == "failed" or len(got) < len(self.orders) * self.n:
            return
        samples = [self._sample_entry(got, j) for j in range(self.n)]
        # an answer missing because a reply was empty or cut by max_tokens is not final: not journaled, so a rerun
        # asks again (the LLM cache answers a cut reply, an empty one is sent again)
        cut = any(s["answer"] is None and any(incomplete(got[o, j][3]) for o in self.orders)
                  for j, s in enumerate(samples))
        if self.multi:
            entry = {"item": self.items[k].id, "request": self.hashes[k],
                     "answer": [s.pop("answer") for s in samples], "samples": samples}
            self.answers[k] = [np.nan if v is None else v for v in entry["answer"]]
        else:
            entry = {"item": self.items[k].id, "request": self.hashes[k], **samples[0]}
            self.answers[k] = np.nan if entry["answer"] is None else entry["answer"]
        if cut:
            self.state[k] = "cut"
            self.counts["cut"] += 1
        else:
            self.journal.append(entry)
            self.state[k] = "journaled"
            self._count(entry)
        self._progress()

    def _sample_entry(self, got, j):
        """Sample j's answer from its orders (agreeing orders or one readable order decide; a disagreement is a
        tie) with the raw choices, labels, parse notes and replies."""
        labels = [got[o, j][1] for o in self.orders]
        known = [v for v in labels if v is not None]
        if not known:
            answer = None
        elif len(known) == 1 or known[0] == known[1]:
            answer = known[0]
        else:
            answer = 0.5  # the two orders disagree: a tie
        return {"answer": answer, "choices": [got[o, j][0] for o in self.orders], "labels": labels,
                "how": [got[o, j][2] for o in self.orders], "replies": [got[o, j][3][:REPLY_KEEP] for o in self.orders]}

    def _count(self, entry):
        if "samples" in entry:  # K answers: each counts as one answer
            self.counts["unparsed"] += sum(v is None for v in entry["answer"])
            for sample in entry["samples"]:
                self._count_orders(sample["labels"], sample["choices"])
            return
        self.counts["unparsed"] += entry["answer"] is None
        self._count_orders(entry["labels"], entry["choices"])

    def _count_orders(self, labels, choices):
        c = self.counts
        raw = [v for v in choices if v in (1, 2)]
        c["non_tie_choices"] += len(raw)
        c["first_position"] += sum(v == 1 for v in raw)
        if len(labels) == 2 and None not in labels:
            c["swap_both_parsed"] += 1
            c["swap_disagreements"] += labels[0] != labels[1]
            c["position_same"] += choices[0] == choices[1] and choices[0] in (1, 2)

    def _progress(self):
        self.bar.update(1)
        led = self.llm.ledger() if self.llm is not None else {}
        self.bar.set_postfix(hits=led.get("cache_hits", 0), unparsed=self.counts["unparsed"],
                             failed=self.counts["failed"])

    def _stop(self, call, k):
        """Asked before each call: whether to start no more (a stop reason is set, Ctrl-C, or a budget is spent and
        the call is not answered by the cache alone). The LLM layer enforces the budgets on every HTTP request; this
        only keeps calls that could not be sent from starting."""
        if self.stopped is not None or self.llm.cancelled:
            return True
        why = self.llm.budget_spent()
        if why is not None and not self.llm.cached(**call):
            self._set_stop(why)
            return True
        return False

    def _info(self, cfg, todo):
        c, n = self.counts, len(self.items)
        labeled = np.isfinite(self.answers)
        led = self.llm.ledger() if self.llm is not None else {}
        journaled = sum(1 for k in todo if self.state.get(k) == "journaled")
        answered = c["from_journal"] + journaled
        # every item is one of: answered (journal, or journaled now), failed, cut (empty or cut replies: asked again
        # on rerun), unfinished (asked, but the run stopped before its answer was final, e.g. its re-ask), unasked
        unasked = sum(1 for k in todo if k not in self.asked and self.state.get(k) != "failed")
        unfinished = sum(1 for k in todo if k in self.asked and self.state.get(k) not in ("journaled", "failed",
                                                                                            "cut"))
        sent = led.get("attempts", 0)  # HTTP requests sent, retries included
        tokens = led.get("prompt_tokens", 0) + led.get("completion_tokens", 0)
        info = {**self.lab.settings(), **self.prompt.provenance(), "backend": cfg["backend"],
                "base_url": cfg["base_url"] if cfg["backend"] == "openai" else None,
                "server_models": led.get("server_models", []),
                "items": n, **answer_counts(self.answers), "parsed": int(labeled.sum()), "unparsed": c["unparsed"],
                "failed": c["failed"], "cut": c["cut"],
                "unfinished": unfinished, "unasked": unasked, "answered_items": answered,
                "labeled_items": int(labeled.reshape(n, -1).any(axis=1).sum()) if n else 0,
                "from_journal": c["from_journal"], "journal_invalid": c["journal_invalid"],
                "reasked": c["reasked"], "reask_recovered": c["reask_recovered"],
                "swap_disagreements": c["swap_disagreements"],
                "position_bias_rate": _rate(c["position_same"], c["swap_both_parsed"]),
                "first_position_rate": _rate(c["first_position"], c["non_tie_choices"]),
                "requests": sent, "retries": led.get("retries", 0), "cache_hits": led.get("cache_hits", 0),
                "prompt_tokens": led.get("prompt_tokens", 0), "completion_tokens": led.get("completion_tokens", 0),
                # requests whose tokens (and cost) are estimates, 4 characters each: the server sent no or invalid usage
                "estimated_requests": led.get("estimated_requests", 0),
                # tokens per answered request (failed attempts carry none); "requests" counts every attempt sent
                "answered_requests": led.get("requests", 0),
                "tokens_per_request": _rate(tokens, led.get("requests", 0)), "cost_usd": led.get("cost_usd", 0.0),
                "stopped": self.stopped, "errors": self.errors, "journal": self.journal.path,
                "queries": self.n if self.multi else None,
                "queries_to_ask": len(todo) * self.n * len(self.orders),
                # complete: every item answered; else the run mode stores it as incomplete and a rerun asks the rest
                "complete": self.stopped is None and c["failed"] == 0 and answered == n}
        if c["cut"]:
            log.warning(f"llm labeler: {c['cut']} item(s) got only empty replies or replies cut by llm.max_tokens="
                        f"{cfg['max_tokens']} (finish_reason=length); they are not journaled: a rerun asks the "
                        f"empty ones again, and the cut ones are answered by the LLM cache until llm.max_tokens is "
                        f"raised")
        return info


def _rate(a, b):
    return float(a / b) if b else None

