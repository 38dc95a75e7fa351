"""The operator's and the submitter's commands: init, run, resync, submit, status, transfer, stake.

Theory of operation: every command except `init`, `run` and `resync` is a thin client of a running daemon. It finds
the daemon through `HOME/run.json` (written by the daemon once it is up) and speaks the control API on 127.0.0.1
(`moenode.client.Control`) with the token in `HOME/control.token`; both files are readable by the node's user
only, so these commands run as that user. `run` is the daemon itself, in the foreground, and stops cleanly on
SIGINT/SIGTERM.

Output: human tables (rich) by default, `--json` for machine-readable output on stdout. Errors are one line on
stderr and exit code 1 (2 for bad usage); nothing is half-done on error. Heavy imports (trio, libp2p, numpy,
onnxruntime) stay inside the commands so `moenode --help` is instant.

The home directory is `--home`, else $MOENODE_HOME, else ~/.moenode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import typer

from moenode.cli.output import console, fail, fmt, out_json, short

if TYPE_CHECKING:
    from moenode.core.genesis import Genesis

T = TypeVar("T")

HOME_HELP = "Node home directory (key, config.toml, genesis, ledger, logs). Default: $MOENODE_HOME or ~/.moenode."


def default_home() -> Path:
    return Path(os.environ.get("MOENODE_HOME") or Path.home() / ".moenode")


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser().resolve()


STATUS_ORDER = ("peer_id", "account", "model", "spaces", "addrs", "peers", "epoch", "sync", "sync_state", "stake", "bonding",
                "stake_by_epoch", "member_from_epoch", "voting_power", "balance", "rounds", "wins", "proxies",
                "strikes", "rejections", "ledger", "counters_since")


def membership(st: dict[str, Any]) -> str:
    """Where a node is on the way to serving rounds: synced, funded, staked (bonding, then in a table), member."""
    sync = st.get("sync")
    if not isinstance(sync, dict):
        sync = {}
    if sync.get("state") not in (None, "synced"):
        return f"catching up ({sync.get('state')}, {sync.get('applied', 0)} applied)"
    epoch, start = st.get("epoch"), st.get("member_from_epoch")
    if st.get("voting_power"):
        return f"shard member in epoch {epoch} ({st['voting_power']}/10000 voting power)"
    if isinstance(start, int) and isinstance(epoch, int) and start > epoch:
        return f"staked; a shard member from epoch {start} (now {epoch})"
    if st.get("bonding"):
        e = f" (placed by epoch {epoch}: member from epoch {epoch + 2} at the latest)" if isinstance(epoch, int) else ""
        return f"stake of {st['bonding']} bonding: it joins the stake table at the next checkpoint{e}"
    if st.get("stake"):
        return "staked; a member once its stake table is in force"
    if st.get("balance"):
        return "synced and funded; not staked (`moenode stake AMOUNT --model M`: member from epoch E+2)"
    return "synced; no balance yet (ask an operator for `moenode transfer`)"


def status_table(st: dict[str, Any], title: str = "node status"):
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("field", style="bold cyan")
    t.add_column("value", overflow="fold")
    t.add_row("membership", membership(st))
    keys = [k for k in STATUS_ORDER if k in st] + sorted(k for k in st if k not in STATUS_ORDER)
    for k in keys:
        v = st[k]
        if k == "peers" and isinstance(v, (list, dict)):
            v = f"{len(v)} connected" + (f" ({fmt(list(v))})" if v else "")
        t.add_row(k, fmt(v))
    return t


def _read_texts(texts: list[str], file: Path | None) -> list[str]:
    """Texts from the arguments, or from a .jsonl file of strings or objects with a "text" field."""
    if texts and file:
        fail("give TEXT arguments or --file, not both", 2)
    if file is None:
        return list(texts)
    items: list[str] = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{file}: cannot read ({e})")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            fail(f"{file}:{n}: not JSON ({e})")
        text = obj.get("text") if isinstance(obj, dict) else obj
        if not isinstance(text, str) or not text:
            fail(f'{file}:{n}: each line must be a JSON string or an object with a non-empty "text" field')
        items.append(text)
    return items


def check_batch(items: list[str], home: Path, file: Path | None) -> None:
    """Refuse, before anything is paid, a batch over the network's limits (its genesis: `max_batch_items` items of
    at most `max_item_bytes` bytes; 256 and 8,192 by default)."""
    from moenode.core.errors import SchemaError
    from moenode.core.genesis import Params, parse_genesis
    from moenode.core.round import batch_problem

    try:
        params = parse_genesis((home / "genesis.toml").read_text(encoding="utf-8")).params
    except (OSError, SchemaError):  # the daemon checks again with its own genesis
        params = Params()
    problem = batch_problem(items, params)
    if problem:
        fail(f"{problem}" + (f" (in {file}); split it" if file else ""), 2)


def resolve_account(to: str) -> str:
    """Hex account id of a hex key, a peer id (12D3KooW...) or a node home directory; only accounts someone can spend
    from (an Ed25519 public key, not an escrow)."""
    from moenode.core.crypto import is_ed25519_public_key
    from moenode.core.orders import is_escrow

    s = to.strip()
    if len(s) == 64:
        try:
            account = bytes.fromhex(s)
        except ValueError:
            pass
        else:
            if is_escrow(account):
                fail(f"{s} is an escrow account: a balance there could never be spent", 2)
            if not is_ed25519_public_key(account):
                fail(f"{s} is not an Ed25519 public key, so no one could spend from it (a typo?)", 2)
            return s.lower()
    p = Path(s).expanduser()
    if p.is_dir():
        from moenode.core.crypto import Ed25519Signer
        from moenode.store.keys import KeyFileError, load_key

        try:
            return Ed25519Signer(load_key(p / "key")).public_key.hex()
        except KeyFileError as e:
            fail(str(e))
    if s.startswith(("12D3", "Qm")):
        from moenode.core.errors import ProtocolError
        from moenode.net.identity import account_id_from_text

        try:
            return account_id_from_text(s).hex()
        except ProtocolError as e:
            fail(f"{s}: not a valid peer id ({e})", 2)
    fail(f"{to!r} is not an account (64 hex digits), a peer id (12D3KooW...) or a node home directory", 2)


def _control(home: Path, timeout: float = 10.0):
    from moenode.client import Control

    return _ask(lambda: Control.for_home(home, timeout))


def _ask(call: Callable[[], T]) -> T:
    """A control API call; a ControlError (node not running, refused, timed out) ends the command in one line."""
    from moenode.client import ControlError

    try:
        return call()
    except ControlError as e:
        fail(str(e))


# --- commands --------------------------------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    """Add the node commands to the root command: a node's home and process (init, run, resync), then what a user
    asks of a running node (submit, status, transfer, stake)."""
    for command in (init, run, resync, submit, status, transfer, stake):
        app.command()(command)


# --- a node's home and process: init, run, resync --------------------------------------------------------------
def init(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    model: str = typer.Option("minilm-l6", help="The encoder this node serves: a zoo name (see `moenode expert "
                              "zoo`) or an .onnx path (stored absolute)."),
    listen: list[str] = typer.Option([], help="Listen multiaddr (repeatable). Default /ip4/127.0.0.1/tcp/0."),
    force: bool = typer.Option(False, "--force", help="Rewrite config.toml. The key is never replaced."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create a node home: a new Ed25519 key (mode 0600), a default config.toml and an empty ledger store.

    Examples:

      moenode init --home ~/mynode --model minilm-l6

      moenode init --home ./n1 --listen /ip4/0.0.0.0/tcp/4001
    """
    from moenode.node.config import ConfigError
    from moenode.node.home import init_home
    from moenode.store.keys import KeyFileError
    from moenode.store.ledger_db import StoreError

    h = _home(home)
    if (h / "config.toml").exists() and not force:
        fail(f"{h} is already a node home (config.toml exists); use --force to rewrite the config")
    try:
        info = init_home(h, model, force=force, listen=listen)
    except (ConfigError, KeyFileError, StoreError) as e:
        fail(str(e))
    if as_json:
        return out_json(info)
    c = console()
    c.print(f"[green]node home ready[/] {h}")
    c.print(f"  account  {info['account']}\n  peer id  {info['peer_id']}\n  key      {info['key']} (0600)"
            f"\n  config   {info['config']}")
    c.print(f"next: copy the network's genesis and run  [bold]moenode run --home {h} --genesis GENESIS.toml "
            f"--bootstrap ADDR[/]")


def run(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    genesis: Path = typer.Option(None, "--genesis", help="Genesis TOML of the network to join (copied into "
                                 "HOME/genesis.toml on first run)."),
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Multiaddr of a running node, "
                                        "/ip4/IP/tcp/PORT/p2p/PEERID (repeatable)."),
    log_level: str = typer.Option("", help="debug, info, warning or error (default: config.toml)."),
    log_format: str = typer.Option("", help="HOME/node.log as json (one object per line, the default) or "
                                   "text (for people)."),
) -> None:
    """Run the node in the foreground until SIGINT (Ctrl-C) or SIGTERM, then shut down cleanly.

    The node syncs the ledger from its peers, then follows gossip, serves rounds and writes HOME/run.json with its peer id, addresses and control URL (127.0.0.1: /status, /metrics).

    Examples:

      moenode run --home ~/mynode --genesis genesis.toml --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...

      moenode run --home ~/mynode            # later runs: genesis and peers are remembered
    """
    h = _home(home)
    if not (h / "key").exists():
        fail(f"{h} has no key; create the home first with `moenode init --home {h}`")
    if genesis is not None and not genesis.is_file():
        fail(f"{genesis}: no such genesis file")
    if genesis is None and not (h / "genesis.toml").exists():
        fail(f"{h} has no genesis.toml; pass --genesis with the network's genesis file")
    if log_format and log_format.lower() not in ("json", "text"):
        fail(f"--log-format {log_format!r}: expected json or text", 2)
    for addr in bootstrap:
        if not addr.startswith("/") or "/p2p/" not in addr:
            fail(f"--bootstrap {addr!r}: expected a multiaddr ending in /p2p/<peer id>, such as "
                 "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... (a running node's `addrs` in run.json)", 2)
    from moenode.core.errors import SchemaError
    from moenode.node.config import ConfigError
    from moenode.store.keys import KeyFileError
    from moenode.store.ledger_db import StoreError

    try:
        code = run_daemon(h, genesis, bootstrap, log_level or None, log_format or None)
    except BaseException as e:  # noqa: BLE001 - the daemon's errors can come wrapped in a trio ExceptionGroup
        err = single_error(e)
        if isinstance(err, (ConfigError, KeyFileError, StoreError)):  # a corrupt key, token or ledger, a port
            fail(str(err))                                              # in use: one line, files kept
        if isinstance(err, SchemaError):  # the home's genesis.toml, damaged (a --genesis file is checked first)
            fail(f"{h / 'genesis.toml'}: {err}; copy the network's genesis there again (or pass --genesis)")
        if type(err).__name__ == "ModelError":  # moenode.encoders.runtime, not imported for --help
            fail(f"{err} (config.toml [node] model in {h})")
        raise
    raise typer.Exit(code)


def resync(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    force: bool = typer.Option(False, "--force", help="Resync a ledger that still opens (its locks are set "
                               "aside with it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set a lost or broken ledger aside and start an empty one that the node fetches again from its peers.

    For a home whose ledger.sqlite is missing, empty or corrupt (`moenode run` refuses it and says so). The key
    and the certificate archive are kept; the old files are renamed, never deleted. The ledger held this node's
    vote locks, which peers cannot give back: so the node votes on no order and no checkpoint for two epochs,
    until everything it may have voted for before has closed. Stop the node first. A ledger that still opens
    is left alone unless you pass --force.

    Examples:

      moenode resync --home ~/mynode

      moenode resync --home ./testnet/node2 --json
    """
    import time

    from moenode.store.ledger_db import StoreError, resync_ledger

    h = _home(home)
    genesis, ledger = _resync_inputs(h)
    if ledger.exists() and ledger.stat().st_size > 0 and not force:
        _refuse_a_usable_ledger(h, ledger, genesis)
    now_ms = int(time.time() * 1000)
    try:
        moved, votes_from = resync_ledger(ledger, genesis, now_ms,
                                          time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms / 1000)))
    except (StoreError, OSError) as e:
        fail(str(e))
    minutes = max(0, genesis.epoch_start(votes_from) - now_ms) / 60_000
    info = {"home": str(h), "set_aside": [str(m) for m in moved], "ledger": str(ledger),
            "votes_from_epoch": votes_from, "minutes_until_voting": round(minutes, 1)}
    if as_json:
        return out_json(info)
    typer.echo(f"ledger reset: {info['ledger']} is empty; the next `moenode run` fetches it from peers")
    for m in moved:
        typer.echo(f"  set aside: {m}")
    typer.echo(f"warning: this node's vote locks are lost; it will not vote on orders or checkpoints before "
               f"epoch {votes_from} (about {minutes:.0f} min from now)", err=True)


def _resync_inputs(h: Path) -> tuple[Genesis, Path]:
    """(the network's genesis, the ledger path) of a home that can be resynced: it has a key and no running node."""
    from moenode.client import pid_alive, read_run
    from moenode.core.errors import SchemaError
    from moenode.core.genesis import parse_genesis
    from moenode.node.config import ConfigError, load_config

    if not (h / "key").exists():
        fail(f"{h} has no key: there is nothing to resync (`moenode run` starts a new home from scratch)")
    running = read_run(h)
    if running is not None and pid_alive(int(running.get("pid", 0))):
        fail(f"a node is running in {h} (pid {running.get('pid')}); stop it first")
    try:
        cfg = load_config(h)
        genesis = parse_genesis(cfg.path("genesis").read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{h} has no genesis.toml; copy the network's genesis there first")
    except (ConfigError, SchemaError, OSError) as e:
        fail(str(e))
    return genesis, cfg.path("ledger")


def _refuse_a_usable_ledger(h: Path, ledger: Path, genesis: Genesis) -> None:
    """End the command if `ledger` opens as `moenode run` would open it: its vote locks are still good."""
    from moenode.core.crypto import Ed25519Signer, ed25519_verify
    from moenode.store.keys import KeyFileError, load_key
    from moenode.store.ledger_db import LedgerDB, StoreError, open_authority

    try:
        authority = open_authority(ledger, genesis, Ed25519Signer(load_key(h / "key")), ed25519_verify)
        cast(LedgerDB, authority.store).close()  # the store open_authority opened
    except KeyFileError as e:
        fail(str(e))
    except StoreError as e:
        if not e.resyncable:
            fail(str(e))
    else:
        fail(f"{ledger} is a usable ledger, with this node's vote locks; resync only a missing, empty or "
             "broken one (--force to set it aside anyway)")


# --- asking a running node: submit, status, transfer, stake ----------------------------------------------------
def submit(
    texts: list[str] = typer.Argument(None, help="Text items of the batch (one round embeds one batch)."),
    file: Path = typer.Option(None, "--file", "-f", help=".jsonl file: one JSON string, or object with a "
                              '"text" field, per line.'),
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    fee: int = typer.Option(None, help="Fee paid into escrow for the round (default: config.toml submit_fee)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the vectors to this .npz file: `vectors` (float32, "
                             "items x dim), `space`, `model_ids` and `shard_ids` (one per row)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON (embeddings base64, space, "
                                 "model id per row)."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for a certificate."),
    deadline: float = typer.Option(0.0, "--deadline", help="Seconds the shard's members may take to commit "
                                   "(0: the network's timers). Trades latency for quality: members wait for "
                                   "every commit until then, so a slow, strong model is not struck."),
    space: str = typer.Option(None, "--space", help="The vector space to embed in (default: config.toml "
                              "submit_space, else the network's default space). Batches of one space share an "
                              "index."),
) -> None:
    """Embed one batch of text through the network: pay, send to a shard, wait for the certificate.

    Prints the embedding summary, the winning member and producer (when it proxied), the loss and the certificate. If a shard cannot certify, the node retries at once on a fresh shard (paying again if the balance allows) and the failed shard's fee is refunded after its deadline.

    Examples:

      moenode submit --home ~/mynode "first text" "second text"

      moenode submit --home ./testnet/node2 --file batch.jsonl --out vectors.npz --json

      moenode submit --home ./testnet/node1 --deadline 60 "wait for the large expert"

      moenode submit --home ./testnet/node2 --space main --file part-07.jsonl --out part-07.npz
    """
    items = _read_texts(texts or [], file)
    if not items:
        fail("nothing to submit: give TEXT arguments or --file F.jsonl", 2)
    check_batch(items, _home(home), file)
    if fee is not None and fee < 1:
        fail("--fee must be a positive integer", 2)
    if not 0 <= deadline <= 86_400:
        fail("--deadline must be between 0 and 86400 seconds", 2)
    if out is not None and out.suffix != ".npz":
        fail(f"--out writes .npz (vectors, space id, model id per row): name it {out.stem}.npz", 2)
    from moenode.client import ControlError, decode_embeddings

    ctl = _control(_home(home), timeout)
    try:
        res = ctl.submit(items, fee, timeout=max(timeout, deadline + 60), deadline_ms=int(deadline * 1000),
                         space=space)
    except ControlError as e:
        fail(str(e))
    emb = decode_embeddings(res)
    if out is not None:
        save_submitted(out, res, emb)
    if as_json:
        res = dict(res, items=len(items), shape=list(emb.shape))
        if out is not None:
            res["out"] = str(out)
        return out_json(res)
    print_submit(res, emb, len(items), out)


def status(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the raw /status JSON."),
) -> None:
    """Show a running node: peers, epoch, stake, balance, rounds, wins, proxies, strikes, sync state.

    For a joining node, `sync` shows catch-up progress; after `moenode stake`, `bonding` shows the stake waiting for its checkpoint, `stake_by_epoch` the stake of each fixed table ahead and `member_from_epoch` the epoch it becomes a shard member (stake placed in epoch E counts from E+2). Counters (rounds, wins, proxies) count from `counters_since`, the node's start.

    Examples:

      moenode status --home ~/mynode

      moenode status --home ./testnet/node0 --json | jq .balance
    """
    from moenode.client import ControlError

    try:
        st = _control(_home(home)).status()
    except ControlError as e:
        fail(str(e))
    if as_json:
        return out_json(st)
    console().print(status_table(st, f"node {_home(home)}"))


def transfer(
    to: str = typer.Argument(..., help="Recipient: account (64 hex), peer id (12D3KooW...) or a node home dir."),
    amount: int = typer.Argument(..., help="Amount in base units."),
    home: Path = typer.Option(None, "--home", help="Home of the running node that pays. " + HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Move balance to another account with a certified Transfer order.

    Examples:

      moenode transfer --home ./testnet/node0 ~/newnode 50000      # fund a new operator from the faucet

      moenode transfer --home ~/mynode 3f2a...e9 100
    """
    if amount < 1:
        fail("AMOUNT must be a positive integer", 2)
    account = resolve_account(to)
    ctl = _control(_home(home), 60)
    res = _ask(lambda: ctl.transfer(account, amount))
    if as_json:
        return out_json(res)
    typer.echo(f"transferred {amount} to {account}" + (f"  ({fmt(res)})" if res else ""))


def stake(
    amount: int = typer.Argument(..., help="Amount of balance to lock as stake."),
    model: str = typer.Option(None, "--model", help="The model you serve (default: the node's config)."),
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Stake balance to become a shard member. Stake placed in epoch E counts from epoch E+2.

    The order also declares the spaces the node's model serves (a specialist of minilm-l6 serves `main`), so
    from E+2 the node is drawn into shards of those spaces only.

    Examples:

      moenode stake 1000 --model spec-legal --home ~/newnode

      moenode status --home ~/newnode        # shows the epoch membership starts
    """
    if amount < 1:
        fail("AMOUNT must be a positive integer", 2)
    from moenode.client import ControlError

    ctl = _control(_home(home), 60)
    res = _ask(lambda: ctl.stake(amount, model))
    if as_json:
        return out_json(res)
    try:
        epoch = ctl.status().get("epoch")
    except ControlError:
        epoch = None
    typer.echo(f"staked {amount}" + (f" for model {model}" if model else "") + (f"  ({fmt(res)})" if res else ""))
    if res.get("spaces"):
        typer.echo(f"serves space {', '.join(res['spaces'])} from the same epoch")
    if isinstance(epoch, int):
        typer.echo(f"placed in epoch {epoch}: counts from epoch {epoch + 2} (watch `moenode status`)")


def single_error(e: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one leaf, else `e` itself."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def run_daemon(home: Path, genesis: Path | None, bootstrap: list[str], log_level: str | None,
               log_format: str | None = None) -> int:
    """Run the daemon under trio until it stops (it handles SIGINT/SIGTERM itself). Returns the exit code.

    New --bootstrap addresses are saved in config.toml, so later runs need no flags."""
    from dataclasses import replace

    import trio

    from moenode.node import run_node
    from moenode.node.config import load_config, update_config
    from moenode.node.peers import merged

    cfg = load_config(home)
    if genesis is not None:
        install_genesis(genesis, cfg.path("genesis"))
    overrides: dict[str, Any] = {}
    if log_format:
        overrides["log_format"] = log_format.lower()
    new = [a for a in bootstrap if a not in cfg.bootstrap]
    if new:  # one address per peer: a new one replaces what config.toml had for that peer id
        overrides["bootstrap"] = tuple(merged(new, cfg.bootstrap, limit=1_000))
    if log_level:
        overrides["log_level"] = log_level.lower()
    cfg = replace(cfg, **overrides) if overrides else cfg

    async def main() -> None:
        async with trio.open_nursery() as n:
            node = await n.start(partial(run_node, home, config=cfg))
            if new:  # saved once this process holds the home (a refused second daemon changes nothing)
                update_config(home, bootstrap=list(cfg.bootstrap))
            typer.echo(banner(node))

    trio.run(main)
    typer.echo("node stopped")
    return 0


def banner(node: Any) -> str:
    """What `moenode run` prints once the node is up: who it is, where it listens, where to look."""
    cfg = node.config
    lines = [f"moenode node up  (pid {os.getpid()}, network {node.genesis.name!r})",
             f"  peer id   {node.net.peer_id}",
             *[f"  listen    {a}" for a in node.net.addrs()],
             f"  control   {node.control_url}  (/status, /metrics; token in {cfg.token_path})",
             f"  log       {cfg.path('log')}  ({cfg.log_format})",
             f"  status:   moenode status --home {node.home}    stop: Ctrl-C"]
    return "\n".join(lines)


def install_genesis(src: Path, dst: Path) -> None:
    """Copy the network's genesis into the home; a home that already belongs to another network is refused."""
    from moenode.core.errors import SchemaError
    from moenode.core.genesis import parse_genesis

    text = src.read_text(encoding="utf-8")
    try:
        g = parse_genesis(text)
    except SchemaError as e:
        fail(f"{src}: {e}")
    if dst.exists():
        try:
            current = parse_genesis(dst.read_text(encoding="utf-8"))
        except SchemaError:
            current = None
        if current is not None and current.network_id != g.network_id:
            fail(f"{dst.parent} already belongs to network {current.name!r} ({current.network_id.hex()[:16]}); "
                 f"{src} is another network ({g.name!r}). Use a fresh home for it.")
        if current is not None:
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8")


def save_submitted(out: Path, res: dict[str, Any], emb) -> None:
    """A submit's vectors as a vector file (moenode.client.write_vectors): the space and each row's model and round."""
    from moenode.client import write_vectors

    n = len(emb)
    try:
        write_vectors(out, emb, res.get("space", ""), res.get("model_ids") or [res.get("model_id", "")] * n,
                      [res.get("shard_id", "")] * n)
    except (OSError, ValueError) as e:
        fail(f"cannot write {out}: {e}")


def shard_line(shard: dict[str, Any], space: str) -> str:
    """How many members the round's shard had and how many signed; a shard of one is said plainly."""
    n = shard.get("members")
    line = f"{n} member{'' if n == 1 else 's'}, {shard.get('signatures')} signed the certificate"
    if n == 1:
        line += f" (only one node serves space {space}: no other node checked this work)"
    return line


def print_submit(res: dict[str, Any], emb, items: int, out: Path | None) -> None:
    import numpy as np
    from rich.table import Table

    t = Table(title="certified round", show_header=False, title_justify="left")
    t.add_column(style="bold cyan")
    t.add_column(overflow="fold")
    norms = np.linalg.norm(emb, axis=1) if emb.size else np.zeros(0)
    t.add_row("embeddings", f"{emb.shape[0]} items x {emb.shape[1] if emb.ndim == 2 else 0} dims (float32), "
              f"norm mean {norms.mean() if norms.size else 0:.3f}")
    if emb.size:
        t.add_row("first vector", "[" + ", ".join(f"{x:+.3f}" for x in emb[0, :6]) + ", …]")
    t.add_row("space", f"{res.get('space', '?')} (model {short(res.get('model_id', ''), 16)})")
    winner, producer = res.get("winner", ""), res.get("producer", "")
    t.add_row("winner", str(winner))
    t.add_row("producer", f"{producer}" + (" (proxied)" if producer and producer != winner else ""))
    micro = res.get("loss_micro", res.get("loss") if isinstance(res.get("loss"), int) else None)
    t.add_row("loss", f"{micro / 1e6:.6f} (split-half, lower is better)" if micro is not None else fmt(res.get("loss")))
    if res.get("elapsed_ms") is not None:
        t.add_row("elapsed", f"{res['elapsed_ms']} ms")
    cert = res.get("certificate", "")
    t.add_row("certificate", f"{short(cert, 48)} ({len(cert) // 2} bytes)")
    shard = res.get("shard") or {}
    if shard:
        t.add_row("shard", shard_line(shard, str(res.get("space", "?"))))
    attempts = res.get("attempts") or []
    t.add_row("attempts", f"{len(attempts)}" + (f" ({fmt(attempts)})" if len(attempts) > 1 else ""))
    if out is not None:
        t.add_row("saved", str(out))
    console().print(t)
    if items != emb.shape[0]:
        fail(f"the node returned {emb.shape[0]} vectors for {items} items")


