"""Entry point: `centernet` with its subcommands; turns CenterNetError into one line and an exit code."""
from __future__ import annotations

import sys

import typer
from rich.text import Text

from centernet_core import __version__
from centernet_core.errors import CenterNetError
from centernet_core.tf_runtime import INSTALL_HINT
from centernet_cli.common import err_console

app = typer.Typer(
    name="centernet",
    help="CenterNet (Objects as Points) for TensorFlow: COCO data -> trained, evaluated, exported detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool):
    if value:
        typer.echo(f"centernet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """Example: centernet demo"""
    _state["debug"] = debug


def _register_commands() -> None:
    """Import and add the subcommands. Called inside main()'s error handling, so a missing
    TensorFlow becomes one line instead of an ImportError traceback."""
    from centernet_cli import config_cmd, info, prepare, profiles

    app.add_typer(profiles.app, name="profiles")
    app.command("config")(config_cmd.config)
    app.add_typer(prepare.app, name="prepare")
    app.command("info")(info.info)


def _error(message: str) -> None:
    """One line on stderr; the message is printed verbatim (no rich markup)."""
    err_console.print(Text("error: ", style="bold red") + Text(" ".join(message.split())), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    try:
        _register_commands()
        app(args=argv, standalone_mode=False)
    except ModuleNotFoundError as e:
        if not (e.name or "").split(".")[0] in ("tensorflow", "keras") or _state["debug"]:
            raise
        _error(INSTALL_HINT)
        sys.exit(2)
    except CenterNetError as e:
        if _state["debug"]:
            raise
        _error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors and unexpected failures
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if _state["debug"]:
            raise
        _error(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
