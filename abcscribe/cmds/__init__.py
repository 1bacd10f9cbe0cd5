"""One thin module per subcommand. Each defines ``main`` (a typer command function) and imports
heavy libraries only inside it, so ``abcscribe --help`` stays fast."""

# (subcommand name, module name) in the order ``--help`` lists them.
COMMANDS = [
    ("midi2abc", "midi2abc"),
    ("abc2midi", "abc2midi"),
    ("render", "render"),
    ("embed", "embed"),
    ("mkqa", "mkqa"),
    ("pretrain", "pretrain"),
    ("sft", "sft"),
    ("ppo", "ppo"),
    ("transcribe", "transcribe"),
    ("score", "score"),
]
