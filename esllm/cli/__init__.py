"""Command line: `esllm COMMAND` (installed by `pip install -e .`) or `python -m esllm COMMAND`.

    python -m esllm check-config configs/default.yaml   # validate a contestants file
    python -m esllm adapters [--config C]               # list adapter folders and why any is unusable
                                                        # (static checks; shape checks need the app)
    python -m esllm train RECIPE.yaml [key=value ...] [--resume]   # train a LoRA adapter
    python -m esllm generate --set general [--contestants A B C] [--attempts 3]  # answers in batch
    python -m esllm users add NAME --role rater|admin [--password-stdin]  # asks twice unless --password-stdin
    python -m esllm users list                          # users of $ESLLM_DATABASE_URL (default db/esllm.sqlite3)
    python -m esllm prompts import FILE.jsonl|.csv --name SET   # add a prompt set (a bad file imports nothing)
    python -m esllm sessions create NAME --set SET --contestants A B C --raters r1 r2 r3 --k 2 \\
        [--mode general|full] [--seed N]                # blind rating session over generated answers
    python -m esllm sessions list                       # sessions with each rater's progress
    python -m esllm sessions close NAME
    python -m esllm export SESSION --out DIR [--dpo-threshold 1.0]   # CSV tables, raw scores, answers,
                                                        # dpo.jsonl and kto.jsonl (see esllm/study/export.py)
    python -m esllm belebele [--file F] [--contestants A B]   # Belebele-format multiple choice (bundled sample)
    python -m esllm judge --session S --judge CONTESTANT       # a contestant grades a session; agreement figures
    python -m esllm questions --text-file F --n 3 --m 2        # reading-comprehension questions, checked
    python -m esllm pictos [--file F] [--contestants A B]     # pictogram keywords -> sentence, BLEU and chrF

One style for every command: each module of this package has `register(subparsers)`, which adds its
commands with `set_defaults(func=cmd_…)`; a command function takes the parsed arguments, returns the exit
code (0 ok, 1 partly failed) and raises EsllmError for anything the user must fix, which `main` prints
once, in Spanish, and turns into exit code 2. Commands that use the database upgrade its schema first.
"""

from __future__ import annotations

import argparse
import sys

from esllm import EsllmError


def build_parser() -> argparse.ArgumentParser:
    from esllm.cli import evals, setup, study, train, users

    parser = argparse.ArgumentParser(prog="python -m esllm", description="esllm command line")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for module in (setup, train, users, study, evals):  # the order of `--help`
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
