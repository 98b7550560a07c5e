"""`python -m esllm COMMAND`: the command line (esllm/cli/; `python -m esllm --help` lists the commands)."""

import sys

from esllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
