import sys

from bench import automations
from bench.send import main

# `--phases automations` runs bench/automations.py (its own Redis and `mailers serve`); others as before.
_args = sys.argv[1:]
if "--phases" in _args and "automations" in _args[_args.index("--phases") + 1].split(","):
    where = _args.index("--phases") + 1
    rest = [p for p in _args[where].split(",") if p != "automations"]
    automations.main([])
    if rest:
        sys.argv[where + 1] = ",".join(rest)
        main()
else:
    main()
