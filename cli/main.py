"""Entry point: `centernet` with its subcommands; turns CenterNetError into one line and an exit code."""
from __future__ import annotations

import sys

import typer
from rich.text import Text

from centernet_core import __version__
from centernet_core.errors import CenterNetError
from centernet_core.tf_setup import INSTALL_HINT, cache_inference_weights, require_tensorflow
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
    from centernet_cli import config_cmd, info, profiles

    app.add_typer(profiles.app, name="profiles")
    from centernet_cli import prepare
    app.add_typer(prepare.app, name="prepare")
    app.command("config")(config_cmd.config)
    app.command("info")(info.info)
    from centernet_cli import import_cmd
    app.command("import")(import_cmd.import_)
    from centernet_cli import train
    app.command("train")(train.train)
    from centernet_cli import demo as demo_cmd, eval as eval_cmd, export as export_cmd, predict as predict_cmd
    app.command("eval")(eval_cmd.eval_)
    app.command("export")(export_cmd.export)
    app.command("predict")(predict_cmd.predict)
    app.command("demo")(demo_cmd.demo)


# Commands that run TensorFlow; it is imported (quietly) before they start. (`prepare`
# needs it only for remote paths and imports it itself then.)
_TF_COMMANDS = {"info", "train", "eval", "export", "predict", "demo", "import"}
# Commands that restore weights once and only infer: oneDNN may cache their reordered
# weights (tf_setup.cache_inference_weights). Never a command that trains.
_INFERENCE_COMMANDS = {"eval", "predict"}


def _command_of(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def _error(message: str) -> None:
    """One line on stderr; the message is printed verbatim (no rich markup)."""
    err_console.print(Text("error: ", style="bold red") + Text(" ".join(message.split())), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    try:
        _register_commands()
        if _command_of(argv) in _INFERENCE_COMMANDS:
            cache_inference_weights()
        if _command_of(argv) in _TF_COMMANDS and "--help" not in argv:
            require_tensorflow(quiet=not _state["debug"])
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
    except Exception as e:  # usage errors (click's, bundled in typer) and unexpected failures
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if _state["debug"]:
            raise
        _error(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
