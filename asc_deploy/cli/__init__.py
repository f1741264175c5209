"""The `asc-deploy` command: thin typer verbs, one module per area, no logic here.

Verb modules import only typer/rich at module level; heavy libraries (torch, transformers)
are imported inside the verb, so `asc-deploy bench` runs on a host with only onnxruntime.
"""

from __future__ import annotations

import errno
import sys

import typer

from asc_deploy.errors import UserError

app = typer.Typer(
    name="asc-deploy",
    help="Application Specific Compression of transformer encoders into measured ONNX artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _opt_ins(
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow model folders that ask to run their own code."
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Allow model folders whose only weights are a pickle."
    ),
) -> None:
    """Options before the verb apply to every model the verb loads."""
    from asc_deploy.models.trust import OptIns

    OptIns.trust_remote_code, OptIns.allow_pickle = trust_remote_code, allow_pickle


def _register_verbs() -> None:
    from asc_deploy.cli import (
        bench_verbs,
        compress_verbs,
        deploy_verbs,
        pipeline_verbs,
        report_verbs,
        task_verbs,
    )

    for module in (
        compress_verbs,
        task_verbs,
        deploy_verbs,
        bench_verbs,
        report_verbs,
        pipeline_verbs,
    ):
        module.register(app)


_register_verbs()

# Conditions of the machine the user can fix (space, permissions), not bugs: one line and exit 2
# like any user error, because exit 1 is what CI reads as "a gate failed". Writes through
# fsutil already name their output; this catches the rest (a library writing on its own).
_MACHINE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _machine_error_line(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return (
        f"error: {exc.strerror or exc}{where}; free space or fix the permissions, or choose "
        "another output folder (-o), then run again"
    )


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        # Without standalone mode click *returns* a typer.Exit code instead of exiting with it.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in _MACHINE_ERRORS:
            raise
        print(_machine_error_line(exc), file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        exc.show()
        sys.exit(2)
