"""Run many ``snakemake`` command lines fast: import Snakemake (and the workflow's own imports)
once, then fork one child per command line. Each child runs Snakemake's real entry point
(``snakemake.cli.main``, what ``python -m snakemake`` calls) with its own argv, its stdout and
stderr going to a file, and exits with Snakemake's exit code. Used for the bad-config dry runs,
where starting 50 Python interpreters that each import Snakemake cost a minute on 2 cores.

    python snakemake_forker.py JOBS.json   # [{"argv": [...], "out": "path"}, ...] -> prints codes
"""

import json
import os
import sys

import servingbench.host.config  # noqa: F401  (what the Snakefile imports, loaded once)
import snakemake.cli


def run_one(argv: list[str], out: str) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = ["snakemake", *argv]
            snakemake.cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    jobs = json.loads(open(sys.argv[1]).read())
    codes = [run_one(j["argv"], j["out"]) for j in jobs]
    print(json.dumps(codes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
