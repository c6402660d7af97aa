"""Entry point: `centernet` with its subcommands; turns CenterNetError into one line and an exit code."""
from __future__ import annotations

import sys

import typer

from centernet_core import __version__
from centernet_core.errors import CenterNetError
from centernet_cli import config_cmd, profiles
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


app.add_typer(profiles.app, name="profiles")
app.command("config")(config_cmd.config)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    try:
        app(args=argv, standalone_mode=False)
    except CenterNetError as e:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e} (run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
