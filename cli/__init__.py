"""The `centernet` command line: thin Typer commands over centernet_core (installed as centernet_cli)."""
