"""What ``t2i serve`` does: check the bind, log at info, run uvicorn."""

from __future__ import annotations

from typing import Any

import click

from t2i_server.settings import InsecureBindError, ServeSettings, check_bind, token_from


def run(ctx: click.Context, *, token: str | None, **options: Any) -> None:
    """Start the server in this process until Ctrl-C (usage errors exit with code 2)."""
    settings = ServeSettings(token=token_from(token), **options)
    try:
        check_bind(settings)
    except InsecureBindError as exc:
        raise click.UsageError(str(exc)) from None
    _log_requests(ctx)
    import uvicorn

    from t2i_server.app import create_app

    app = create_app(settings)
    click.echo(
        f"t2i serve: http://{settings.host}:{settings.port}/ (API: /sdapi/v1, /t2i/v1, "
        f"docs: /docs){' - token required' if settings.token else ''}",
        err=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


def _log_requests(ctx: click.Context) -> None:
    """Request lines are info level: raise the CLI's default (warning) to info."""
    from click.core import ParameterSource

    from t2i.logs import configure_logging

    root = ctx.find_root()
    if root.get_parameter_source("log_level") in (ParameterSource.DEFAULT, None):
        configure_logging("info", root.params.get("log_format") or "console")
