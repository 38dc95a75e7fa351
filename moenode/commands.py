"""Node-side commands of the `moenode` CLI: init, run, submit, status, transfer, stake, and `testnet`.

Theory of operation: every command except `init`, `run` and `resync` is a thin client of a running daemon. It finds
the daemon through `HOME/run.json` (written by the daemon once it is up) and speaks the control API on 127.0.0.1
(`moenode.client.Control`) with the token in `HOME/control.token`; both files are readable by the node's user
only, so these commands run as that user. `run` is the daemon itself, in the foreground, and stops cleanly on
SIGINT/SIGTERM.
`testnet` starts and stops whole local networks of daemons (`moenode.testing.testnet`).

Output: human tables (rich) by default, `--json` for machine-readable output on stdout. Errors are one line on
stderr and exit code 1 (2 for bad usage); nothing is half-done on error. Heavy imports (trio, libp2p, numpy,
onnxruntime) stay inside the commands so `moenode --help` is instant.

The home directory is `--home`, else $MOENODE_HOME, else ~/.moenode.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from moenode.testing.testnet import Testnet

HOME_HELP = "Node home directory (key, config.toml, genesis, ledger, logs). Default: $MOENODE_HOME or ~/.moenode."
DEMO_DIR = "moenode-testnet"


def default_home() -> Path:
    return Path(os.environ.get("MOENODE_HOME") or Path.home() / ".moenode")


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser().resolve()


def fail(msg: str, code: int = 1) -> NoReturn:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def out_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _control(home: Path, timeout: float = 10.0):
    from moenode.client import Control, ControlError

    try:
        return Control.for_home(home, timeout)
    except ControlError as e:
        fail(str(e))


def _setup_logging(level: str = "info") -> None:
    """key=value lines on stderr: time, level, logger, message (the daemon formats its own log file)."""
    import logging

    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s")


# --- formatting helpers ----------------------------------------------------------------------------------------
def short(v: Any, n: int = 16) -> str:
    s = str(v)
    return s if len(s) <= n + 1 else s[:n] + "…"


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(short(x, 24) for x in v) if len(v) <= 4 else f"{len(v)} ({', '.join(short(x, 12) for x in v[:3])}, …)"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return "-" if v is None else str(v)


STATUS_ORDER = ("peer_id", "account", "model", "addrs", "peers", "epoch", "sync", "sync_state", "stake", "balance",
                "member", "member_from_epoch", "pending_stake", "rounds", "wins", "proxies", "proxied", "strikes",
                "rejections", "supply", "ledger_digest")


def membership(st: dict[str, Any]) -> str:
    """Where a node is on the way to serving rounds: synced, funded, staked, member."""
    sync = st.get("sync") if isinstance(st.get("sync"), dict) else {}
    if sync.get("state") not in (None, "synced"):
        return f"catching up ({sync.get('state')}, {sync.get('applied', 0)} applied)"
    if st.get("voting_power"):
        return f"shard member in epoch {st.get('epoch')} ({st['voting_power']}/10000 voting power)"
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


def _load_testnet(dir: Path) -> Testnet:
    from moenode.testing.testnet import Testnet, TestnetError

    try:
        return Testnet.load(dir)
    except TestnetError as e:
        fail(str(e))


# --- commands --------------------------------------------------------------------------------------------------
def register_node_commands(app: typer.Typer) -> None:  # noqa: C901 - one place that lists every command
    @app.command()
    def init(
        home: Path = typer.Option(None, "--home", help=HOME_HELP),
        model: str = typer.Option("minilm-l6", help="The encoder this node serves: a zoo name (see `moenode expert "
                                  "list`) or an .onnx path."),
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
        from rich.console import Console

        c = Console()
        c.print(f"[green]node home ready[/] {h}")
        c.print(f"  account  {info['account']}\n  peer id  {info['peer_id']}\n  key      {info['key']} (0600)"
                f"\n  config   {info['config']}")
        c.print(f"next: copy the network's genesis and run  [bold]moenode run --home {h} --genesis GENESIS.toml "
                f"--bootstrap ADDR[/]")

    @app.command()
    def run(
        home: Path = typer.Option(None, "--home", help=HOME_HELP),
        genesis: Path = typer.Option(None, "--genesis", help="Genesis TOML of the network to join (copied into "
                                     "HOME/genesis.toml on first run)."),
        bootstrap: list[str] = typer.Option([], "--bootstrap", help="Multiaddr of a running node, "
                                            "/ip4/IP/tcp/PORT/p2p/PEERID (repeatable)."),
        log_level: str = typer.Option("", help="debug, info, warning or error (default: config.toml)."),
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
        for addr in bootstrap:
            if not addr.startswith("/") or "/p2p/" not in addr:
                fail(f"--bootstrap {addr!r}: expected a multiaddr ending in /p2p/<peer id>, such as "
                     "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... (a running node's `addrs` in run.json)", 2)
        from moenode.core.errors import SchemaError
        from moenode.node.config import ConfigError
        from moenode.store.keys import KeyFileError
        from moenode.store.ledger_db import StoreError

        try:
            code = run_daemon(h, genesis, bootstrap, log_level or None)
        except (ConfigError, KeyFileError, StoreError) as e:  # a corrupt key, token or ledger: one line, files kept
            fail(str(e))
        except SchemaError as e:  # the home's genesis.toml, damaged (a --genesis file is checked before it is copied)
            fail(f"{h / 'genesis.toml'}: {e}; copy the network's genesis there again (or pass --genesis)")
        raise typer.Exit(code)

    @app.command()
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

        from moenode.client import pid_alive, read_run
        from moenode.core.crypto import Ed25519Signer, ed25519_verify
        from moenode.core.errors import SchemaError
        from moenode.core.genesis import parse_genesis
        from moenode.node.config import ConfigError, load_config
        from moenode.store.keys import KeyFileError, load_key
        from moenode.store.ledger_db import StoreError, open_authority, resync_ledger

        h = _home(home)
        if not (h / "key").exists():
            fail(f"{h} has no key: there is nothing to resync (`moenode run` starts a new home from scratch)")
        run = read_run(h)
        if run is not None and pid_alive(int(run.get("pid", 0))):
            fail(f"a node is running in {h} (pid {run.get('pid')}); stop it first")
        try:
            cfg = load_config(h)
            genesis = parse_genesis(cfg.path("genesis").read_text(encoding="utf-8"))
        except FileNotFoundError:
            fail(f"{h} has no genesis.toml; copy the network's genesis there first")
        except (ConfigError, SchemaError, OSError) as e:
            fail(str(e))
        ledger = cfg.path("ledger")
        if ledger.exists() and ledger.stat().st_size > 0 and not force:
            try:
                open_authority(ledger, genesis, Ed25519Signer(load_key(h / "key")), ed25519_verify).store.close()
            except KeyFileError as e:
                fail(str(e))
            except StoreError as e:
                if not e.resyncable:
                    fail(str(e))
            else:
                fail(f"{ledger} is a usable ledger, with this node's vote locks; resync only a missing, empty or "
                     "broken one (--force to set it aside anyway)")
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

    @app.command()
    def submit(
        texts: list[str] = typer.Argument(None, help="Text items of the batch (one round embeds one batch)."),
        file: Path = typer.Option(None, "--file", "-f", help=".jsonl file: one JSON string, or object with a "
                                  '"text" field, per line.'),
        home: Path = typer.Option(None, "--home", help=HOME_HELP),
        fee: int = typer.Option(None, help="Fee paid into escrow for the round (default: config.toml submit_fee)."),
        out: Path = typer.Option(None, "--out", "-o", help="Write the embeddings to this .npy file (float32, items x "
                                 "dim)."),
        as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON (embeddings base64)."),
        timeout: float = typer.Option(600.0, help="Seconds to wait for a certificate."),
    ) -> None:
        """Embed one batch of text through the network: pay, send to a shard, wait for the certificate.

        Prints the embedding summary, the winning member and producer (when it proxied), the loss and the certificate. If a shard cannot certify, the fee is refunded and the node retries on a fresh shard.

        Examples:

          moenode submit --home ~/mynode "first text" "second text"

          moenode submit --home ./testnet/node2 --file batch.jsonl --out vectors.npy --json
        """
        items = _read_texts(texts or [], file)
        if not items:
            fail("nothing to submit: give TEXT arguments or --file F.jsonl", 2)
        if len(items) > 256:
            fail(f"a batch holds at most 256 items, got {len(items)}; split the file", 2)
        if fee is not None and fee < 1:
            fail("--fee must be a positive integer", 2)
        from moenode.client import ControlError, decode_embeddings

        ctl = _control(_home(home), timeout)
        try:
            res = ctl.submit(items, fee, timeout=timeout)
        except ControlError as e:
            fail(str(e))
        emb = decode_embeddings(res)
        if out is not None:
            import numpy as np

            np.save(out, emb)
        if as_json:
            res = dict(res, items=len(items), shape=list(emb.shape))
            if out is not None:
                res["out"] = str(out)
            return out_json(res)
        print_submit(res, emb, len(items), out)

    @app.command()
    def status(
        home: Path = typer.Option(None, "--home", help=HOME_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the raw /status JSON."),
    ) -> None:
        """Show a running node: peers, epoch, stake, balance, rounds, wins, proxies, strikes, sync state.

        For a joining node, `sync` shows catch-up progress and the stake fields show from which epoch it becomes a shard member (stake takes effect at epoch E+2).

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
        from rich.console import Console

        Console().print(status_table(st, f"node {_home(home)}"))

    @app.command()
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
        from moenode.client import ControlError

        account = resolve_account(to)
        ctl = _control(_home(home), 60)
        try:
            res = ctl.transfer(account, amount)
        except ControlError as e:
            fail(str(e))
        if as_json:
            return out_json(res)
        typer.echo(f"transferred {amount} to {account}" + (f"  ({fmt(res)})" if res else ""))

    @app.command()
    def stake(
        amount: int = typer.Argument(..., help="Amount of balance to lock as stake."),
        model: str = typer.Option(None, "--model", help="The model you serve (default: the node's config)."),
        home: Path = typer.Option(None, "--home", help=HOME_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Stake balance to become a shard member. Stake placed in epoch E counts from epoch E+2.

        Examples:

          moenode stake 1000 --model spec-legal --home ~/newnode

          moenode status --home ~/newnode        # shows the epoch membership starts
        """
        if amount < 1:
            fail("AMOUNT must be a positive integer", 2)
        from moenode.client import ControlError

        ctl = _control(_home(home), 60)
        try:
            res = ctl.stake(amount, model)
        except ControlError as e:
            fail(str(e))
        if as_json:
            return out_json(res)
        try:
            epoch = ctl.status().get("epoch")
        except ControlError:
            epoch = None
        typer.echo(f"staked {amount}" + (f" for model {model}" if model else "") + (f"  ({fmt(res)})" if res else ""))
        if isinstance(epoch, int):
            typer.echo(f"placed in epoch {epoch}: counts from epoch {epoch + 2} (watch `moenode status`)")

    register_testnet_commands(app)


def run_daemon(home: Path, genesis: Path | None, bootstrap: list[str], log_level: str | None) -> int:
    """Run the daemon under trio until it stops (it handles SIGINT/SIGTERM itself). Returns the exit code."""
    from dataclasses import replace

    import trio

    from moenode.node import run_node
    from moenode.node.config import load_config

    cfg = load_config(home)
    if genesis is not None:
        install_genesis(genesis, cfg.path("genesis"))
    overrides: dict[str, Any] = {}
    if bootstrap:
        overrides["bootstrap"] = tuple(dict.fromkeys(list(cfg.bootstrap) + list(bootstrap)))
    if log_level:
        overrides["log_level"] = log_level.lower()
    cfg = replace(cfg, **overrides) if overrides else cfg
    trio.run(lambda: run_node(home, config=cfg))
    return 0


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


def print_submit(res: dict[str, Any], emb, items: int, out: Path | None) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    t = Table(title="certified round", show_header=False, title_justify="left")
    t.add_column(style="bold cyan")
    t.add_column(overflow="fold")
    norms = np.linalg.norm(emb, axis=1) if emb.size else np.zeros(0)
    t.add_row("embeddings", f"{emb.shape[0]} items x {emb.shape[1] if emb.ndim == 2 else 0} dims (float32), "
              f"norm mean {norms.mean() if norms.size else 0:.3f}")
    if emb.size:
        t.add_row("first vector", "[" + ", ".join(f"{x:+.3f}" for x in emb[0, :6]) + ", …]")
    winner, producer = res.get("winner", ""), res.get("producer", "")
    t.add_row("winner", str(winner))
    t.add_row("producer", f"{producer}" + (" (proxied)" if producer and producer != winner else ""))
    micro = res.get("loss_micro", res.get("loss") if isinstance(res.get("loss"), int) else None)
    t.add_row("loss", f"{micro / 1e6:.6f} (split-half, lower is better)" if micro is not None else fmt(res.get("loss")))
    if res.get("elapsed_ms") is not None:
        t.add_row("elapsed", f"{res['elapsed_ms']} ms")
    cert = res.get("certificate", "")
    t.add_row("certificate", f"{short(cert, 48)} ({len(cert) // 2} bytes)")
    attempts = res.get("attempts") or []
    t.add_row("attempts", f"{len(attempts)}" + (f" ({fmt(attempts)})" if len(attempts) > 1 else ""))
    if out is not None:
        t.add_row("saved", str(out))
    Console().print(t)
    if items != emb.shape[0]:
        fail(f"the node returned {emb.shape[0]} vectors for {items} items")


# --- testnet ---------------------------------------------------------------------------------------------------
def register_testnet_commands(app: typer.Typer) -> None:
    testnet = typer.Typer(help="Run a local multi-node testnet: up, status, demo, down.", no_args_is_help=True)
    app.add_typer(testnet, name="testnet")

    @testnet.command("up")
    def up(
        nodes: int = typer.Option(5, "--nodes", "-n", min=1, max=32, help="Number of daemons."),
        dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="Directory for the homes, genesis and "
                                 "testnet.json."),
        models: str = typer.Option("", help="Comma-separated models, one per node (default: general models, then "
                                   "the zoo's specialists)."),
        epoch_ms: int = typer.Option(30_000, help="Epoch length in ms (stake changes count from epoch E+2)."),
        timeout: float = typer.Option(240.0, help="Seconds to wait for every node to be up and connected."),
        as_json: bool = typer.Option(False, "--json", help="Print testnet.json."),
    ) -> None:
        """Start N daemons with their own homes and logs, bootstrapped to each other, then return.

        Writes DIR/genesis.toml (distinct experts, a faucet on node0, short timers) and DIR/testnet.json (peer ids, addrs, homes, status URLs). The daemons keep running until `moenode testnet down`.

        Examples:

          moenode testnet up --nodes 5 --dir ./tn

          moenode submit --home ./tn/node1 "some text"

          moenode testnet down --dir ./tn
        """
        from moenode.testing.testnet import Testnet, TestnetError

        _setup_logging("warning")
        model_list = [m.strip() for m in models.split(",") if m.strip()] or None
        tn = None
        try:
            tn = Testnet.create(dir, nodes, models=model_list, epoch_ms=epoch_ms)
            _start_with_progress(tn, timeout)
        except (TestnetError, KeyboardInterrupt) as e:
            if tn is not None:
                tn.stop()
            fail(str(e) or "interrupted; every node started was stopped")
        except BaseException:
            if tn is not None:
                tn.stop()
            raise
        tn.detach()  # the daemons outlive this command
        if as_json:
            return out_json(json.loads((tn.root / "testnet.json").read_text()))
        _print_nodes(tn, None)
        from rich.console import Console

        Console().print(f"testnet up: {tn.root / 'testnet.json'}\n"
                        f"  submit:  moenode submit --home {tn.nodes[-1].home} \"some text\"\n"
                        f"  status:  moenode testnet status --dir {dir}\n"
                        f"  stop:    moenode testnet down --dir {dir}")

    @testnet.command("down")
    def down(
        dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="The testnet's directory."),
        timeout: float = typer.Option(20.0, help="Seconds to wait after SIGTERM before SIGKILL."),
    ) -> None:
        """Stop every daemon of a testnet: SIGTERM, wait, then SIGKILL what is left. Homes and logs stay.

        Example:

          moenode testnet down --dir ./tn
        """
        tn = _load_testnet(dir)
        result = tn.stop(timeout)
        for name, how in result.items():
            typer.echo(f"{name}: {how}")
        typer.echo(f"testnet down ({len(result)} running node(s) stopped)")

    @testnet.command("status")
    def tn_status(
        dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="The testnet's directory."),
        as_json: bool = typer.Option(False, "--json", help="Print every node's /status as JSON."),
    ) -> None:
        """One row per node: alive, peers, epoch, stake, balance, rounds, wins, proxies, strikes.

        Example:

          moenode testnet status --dir ./tn
        """
        tn = _load_testnet(dir)
        sts = tn.statuses(5)
        if as_json:
            return out_json([{"node": nd.as_json(), "status": st} for nd, st in zip(tn.nodes, sts)])
        _print_nodes(tn, sts)

    @testnet.command("demo")
    def demo(
        nodes: int = typer.Option(5, "--nodes", "-n", min=1, max=32, help="Number of daemons."),
        submissions: int = typer.Option(20, min=1, help="Batches to submit."),
        batch: int = typer.Option(16, min=1, max=256, help="Items per batch (real text from one corpus domain)."),
        concurrency: int = typer.Option(1, min=1, help="Submissions in flight at once."),
        json_out: Path = typer.Option(None, "--json", help="Write the summary as JSON to this path."),
        dir: Path = typer.Option(None, "--dir", "-d", help="Testnet directory (default: a new temporary one)."),
        keep: bool = typer.Option(False, "--keep", help="Leave the testnet running afterwards."),
        epoch_ms: int = typer.Option(30_000, help="Epoch length in ms."),
    ) -> None:
        """The whole flow: start a testnet, submit real text batches, check every certificate, print a summary.

        Each submission is a batch from one domain of the shipped corpus, sent through the nodes in turn; the nodes include domain specialists, so members proxy to experts. Also measures one node embedding and scoring the same batches alone (embed_ms_single), for the latency ratio and the compute ceiling.

        Example:

          moenode testnet demo --nodes 5 --submissions 20 --json demo.json
        """
        import tempfile

        from moenode.testing.demo import DemoConfig, run_demo
        from moenode.testing.testnet import TestnetError

        _setup_logging("warning")
        root = dir or Path(tempfile.mkdtemp(prefix="moenode-demo-"))
        cfg = DemoConfig(nodes=nodes, submissions=submissions, batch=batch, concurrency=concurrency,
                         epoch_ms=epoch_ms, keep=keep)
        try:
            summary = run_demo(root, cfg, ui=_demo_ui())
        except TestnetError as e:
            fail(f"{e}\nlogs: {root}")
        print_demo_summary(summary)
        if json_out is not None:
            json_out.write_text(json.dumps(summary, indent=2))
            typer.echo(f"summary written to {json_out}")
        typer.echo(f"homes and logs: {root}" + ("  (still running: moenode testnet down --dir " + str(root) + ")"
                                                 if keep else ""))
        if summary["failed"]:
            raise typer.Exit(1)


def _start_with_progress(tn, timeout: float) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as p:
        task = p.add_task("starting nodes", total=len(tn.nodes))
        tn.start(timeout=timeout, progress=lambda nd: p.advance(task))


def _count(v: Any, key: str) -> str:
    """A counter field that is either a number or a dict of counters (e.g. rounds={certified: 3, ...})."""
    if isinstance(v, dict):
        return str(v.get(key, 0))
    return fmt(v)


def _print_nodes(tn, sts) -> None:
    from rich.console import Console
    from rich.table import Table

    from moenode.client import peer_count

    t = Table(title=f"testnet {tn.root}", title_justify="left")
    cols = ["node", "model", "pid", "up"]
    if sts is None:
        cols += ["peer id", "control"]
    else:
        cols += ["peers", "epoch", "stake", "balance", "rounds", "wins", "proxied", "served", "strikes", "sync"]
    for col in cols:
        t.add_column(col, justify="right" if col in ("peers", "epoch", "stake", "balance", "rounds", "wins",
                                                      "proxied", "served", "strikes") else "left")
    for i, nd in enumerate(tn.nodes):
        row = [nd.name, nd.model, str(nd.pid or "-"), "yes" if nd.alive() else "[red]no[/]"]
        if sts is None:
            row += [nd.peer_id, nd.control_url or "-"]
        else:
            st = sts[i] or {}
            sync = st.get("sync")
            row += [str(peer_count(st)) if st else "-", fmt(st.get("epoch")), fmt(st.get("stake")),
                    fmt(st.get("balance")), _count(st.get("rounds"), "certified"), fmt(st.get("wins")),
                    _count(st.get("proxies"), "sent"), _count(st.get("proxies"), "served"), fmt(st.get("strikes")),
                    sync.get("state", "-") if isinstance(sync, dict) else fmt(sync)]
        t.add_row(*row)
    Console().print(t)


def _demo_ui():
    """Progress callbacks for run_demo: a rich bar per phase."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class UI:
        def __init__(self) -> None:
            self.p: Progress | None = None
            self.task = None

        def phase(self, name: str, total: int) -> None:
            self.close()
            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.p.start()
            self.task = self.p.add_task(name, total=total, info="")

        def advance(self, info: str = "") -> None:
            if self.p is not None:
                self.p.update(self.task, advance=1, info=info)

        def close(self) -> None:
            if self.p is not None:
                self.p.stop()
                self.p = None

    return UI()


def print_demo_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title="testnet demo", show_header=False, title_justify="left")
    t.add_column(style="bold cyan")
    t.add_column(justify="right")
    t.add_column(style="dim")
    lat, single = s.get("latency_ms") or {}, s.get("embed_ms_single") or {}
    rows = [
        ("nodes", s["nodes"], ", ".join(f"{n['name']}={n['model']}" for n in s.get("node_models", []))),
        ("submissions", s["submissions"], f"batch of {s.get('batch')} items, concurrency {s.get('concurrency')}"),
        ("certified", s["certified"], ""),
        ("failed", s["failed"], ""),
        ("refunded attempts", s.get("retried", 0), "rounds that could not certify and were retried"),
        ("proxied", s["proxied"], f"rounds where an expert produced a member's submission "
                                   f"({s.get('proxied_wins', 0)} of them won)"),
        ("latency p50 / p99", f"{lat.get('p50', 0):.0f} / {lat.get('p99', 0):.0f} ms", "submit to certificate"),
        ("embed_ms_single p50", f"{single.get('p50', 0):.0f} ms", "one node embeds + scores the batch alone"),
        ("latency_ratio p50 / p99", f"{s['latency_ratio_p50']:.2f} / {s.get('latency_ratio_p99', 0):.2f}",
         "goal <= 2.0 / 4.0"),
        ("throughput", f"{s['throughput_per_s']:.3f}/s", ""),
        ("compute ceiling", f"{s['compute_ceiling_per_s']:.3f}/s",
         f"{s.get('cores')} cores / (shard of {s.get('shard_size')} x embed_ms_single)"),
        ("throughput ratio", f"{s.get('throughput_ratio', 0):.2f}", "goal >= 0.7"),
        ("supply before / after", f"{s['supply_before']} / {s['supply_after']}",
         "unchanged" if s["supply_before"] == s["supply_after"] else "[red]CHANGED[/]"),
    ]
    for r in rows:
        t.add_row(r[0], str(r[1]), str(r[2]))
    c.print(t)
    w = Table(title="winners by domain (model of the producer)", title_justify="left")
    w.add_column("domain")
    w.add_column("wins")
    for dom, counts in sorted(s.get("winners_by_domain", {}).items()):
        w.add_row(dom, ", ".join(f"{m} {k}" for m, k in sorted(counts.items(), key=lambda x: -x[1])))
    c.print(w)
