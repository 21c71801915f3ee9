"""Reply-parser speed on adversarial input at growing sizes: qllm's parse_choice and extract_code, and the labeling
parsers (parse_choice, parse_binary_mark, parse_agent_index), on the replies their tests feed them.

    python bench/parser_speed.py                       # sizes 25k, 50k, 100k, 200k characters
    python bench/parser_speed.py --sizes 10000 40000

Each row is one parser on one input shape: the best of --repeats timings at each size and the growth ratio (the time
at the largest size over the time at the smallest, beside the sizes' ratio). Linear parsers grow about as the sizes
do (or less: the labeling parsers read a reply's tail only); the regular expressions these inputs once stalled
grew with its square or cube. Writes results/bench/parser_speed.{json,md}.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from adversarial_replies import LABELING  # noqa: E402  (bench/, beside this script)
from labeling.agent_quality import parse_agent_index  # noqa: E402
from labeling.parse import parse_binary_mark  # noqa: E402
from labeling.parse import parse_choice as label_choice  # noqa: E402
from qllm.policy import extract_code  # noqa: E402
from qllm.prompts import parse_choice as qllm_choice  # noqa: E402
from report import write_report  # noqa: E402

# name -> reply of about n characters (the shapes of tests/qllm/test_prompts.py and test_policy.py; the labeling
# parsers' are bench/adversarial_replies.py's, which tests/labeling/test_parse.py uses too)
QLLM_CHOICE = {
    "candidate then digits": lambda n: "I pick Candidate " + "9" * n,
    "bracketed digits": lambda n: "[" + "9" * n + "]",
    "long list": lambda n: "[" + "1," * (n // 2) + "1]",
    "spaces": lambda n: " " * n + "x",
    "candidate words": lambda n: "candidate " * (n // 10),
    "many numbers": lambda n: "1 " * (n // 2),
    "open think tags": lambda n: "<think>" * (n // 7),
}
EXTRACT_CODE = {
    "fence of spaces": lambda n: "```" + " " * n,
    "ticks": lambda n: "```" * (n // 3),
    "empty fences": lambda n: "```\n" * (n // 4),
    "newlines": lambda n: "\n" * n,
    "def then spaces": lambda n: "def" + " " * n,
    "open think tags": lambda n: "<think>" * (n // 7),
}
PARSERS = [  # (parser name, function of one reply, its inputs)
    ("qllm parse_choice", lambda t: qllm_choice(t, 3), QLLM_CHOICE),
    ("qllm extract_code", extract_code, EXTRACT_CODE),
    ("labeling parse_choice", label_choice, LABELING),
    ("labeling parse_binary_mark", parse_binary_mark, LABELING),
    ("labeling parse_agent_index", lambda t: parse_agent_index(t, 3), LABELING),
]


def best_time(parse, text, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        parse(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    sizes = sorted(a.sizes)
    if len(sizes) < 2 or sizes[0] < 10 or a.repeats < 1:
        p.error("--sizes needs two or more sizes of at least 10 characters, --repeats at least 1")
    rows = []
    for parser, parse, inputs in PARSERS:
        for name, make in inputs.items():
            seconds = [best_time(parse, make(n), a.repeats) for n in sizes]
            rows.append({"parser": parser, "input": name, "seconds": [round(s, 6) for s in seconds],
                         "growth": round(seconds[-1] / max(seconds[0], 1e-9), 2)})
    size_ratio = sizes[-1] / sizes[0]
    lines = [f"Best of {a.repeats}; growth: time at {sizes[-1]} characters over time at {sizes[0]} (sizes' ratio "
             f"{size_ratio:g}).", "",
             "| parser | input | " + " | ".join(f"ms at {n}" for n in sizes) + " | growth |",
             "|---|---|" + "---:|" * len(sizes) + "---:|"]
    for r in rows:
        ms = " | ".join(f"{1000 * s:.3f}" for s in r["seconds"])
        lines.append(f"| {r['parser']} | {r['input']} | {ms} | {r['growth']} |")
    write_report(a.out, "parser_speed", {"sizes": sizes, "repeats": a.repeats, "size_ratio": size_ratio,
                                         "rows": rows}, lines)


if __name__ == "__main__":
    main()
