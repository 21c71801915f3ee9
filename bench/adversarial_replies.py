"""Replies built to crash or stall the labeling reply parsers (parse_choice, parse_binary_mark, parse_agent_index):
name -> the reply of about n characters. tests/labeling/test_parse.py checks the parsers on them at one size,
bench/parser_speed.py times them at growing sizes.
"""
LABELING = {
    "fence of spaces": lambda n: "```" + " " * n + "x",  # cubic in the old fence regex: 84 s at 5000 spaces
    "fence of spaces, closed": lambda n: "```" + " " * n + "x```",
    "answer word then spaces": lambda n: "answer trajectory" + " " * n + "x",
    "trajectory then spaces": lambda n: "Trajectory" + " " * n + "x",
    "hashes": lambda n: "#" * n,
    "brackets": lambda n: "[" * n,
    "open think tags": lambda n: "<think>" * (n // 7),
    "close think tags": lambda n: "</think>" * (n // 8),
    "digits": lambda n: "1" * n,
    "deep JSON": lambda n: '{"a":' * (n // 5) + "1" + "}" * (n // 5),
    "many numbers": lambda n: "1 " * (n // 2),
    "ticks": lambda n: "```" * (n // 3),
    "NFKC expansion": lambda n: "\ufdfa" * (n // 10),  # one character, 18 after NFKC
}
