"""The ``keys`` group: the gateway's API keys (hashed in BATCOMPUTER_KEYS_FILE), listed, created and revoked."""

from __future__ import annotations

import click

from batcomputer.apikeys import KeyRing
from batcomputer.files.storage import Storage
from cli.context import Context, pass_context, table


@click.group(invoke_without_command=True)
@click.pass_context
def keys(click_ctx: click.Context) -> None:
    """API keys (hashed in BATCOMPUTER_KEYS_FILE): list them, or create and revoke."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(keys_list)


@keys.command("list")
@pass_context
def keys_list(ctx: Context) -> None:
    ring = KeyRing.from_settings(ctx.settings)
    rows = [[name, e.get("scope", "?"), e.get("created", "-"), "revoked " + e["revoked"] if e.get("revoked") else
             "active"] for name, e in sorted(ring.entries().items())]
    click.echo(table(rows, ["name", "scope", "created", "state"]) if rows else f"no keys in {ring.path}")


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["score", "admin"]), default="score", show_default=True)
@pass_context
def keys_create(ctx: Context, name: str, scope: str) -> None:
    """Create a key; it is printed once, on the last line (only its hash is kept)."""
    ring = KeyRing.from_settings(ctx.settings)
    token = ring.create(name, scope)
    click.echo(f"created {scope} key {name!r} in {ring.path}; keep it now, it is not shown again:")
    click.echo(token)


@keys.command("grant")
@click.argument("name")
@click.argument("prefix")
@click.option("--withdraw", is_flag=True, help="Take the grant back")
@pass_context
def keys_grant(ctx: Context, name: str, prefix: str, withdraw: bool) -> None:
    """Let a score key read and write batch files under PREFIX (a folder in the storage roots), beside its own
    folder (tenants/NAME in every root). Admin keys need no grants."""
    Storage.from_settings(ctx.settings).confine(prefix, "prefix")  # inside the roots, or a clear refusal
    grants = KeyRing.from_settings(ctx.settings).grant(name, prefix, withdraw)
    click.echo(f"{name!r} may use: its own folder, {', '.join(grants) or 'nothing else'}")


@keys.command("revoke")
@click.argument("name")
@pass_context
def keys_revoke(ctx: Context, name: str) -> None:
    KeyRing.from_settings(ctx.settings).revoke(name)
    click.echo(f"revoked {name!r}")
