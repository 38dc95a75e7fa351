"""A js-libp2p peer on Node.js (tests/net/js/peer.mjs) talks to a moenode host: identify, ping and the certs topic."""

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trio
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from moenode.core.crypto import Ed25519Signer
from moenode.net import account_id_of, topic_name
from moenode.net.direct import envelope_protocol
from netkit import NET, certificate_ok, hosts, make_certificate, seed, wait_until

pytestmark = pytest.mark.slow

JS = Path(__file__).parent / "js"
PEER_TIMEOUT = 20  # seconds the js peer waits before it gives up on its own
SETUP = "run `make setup` (or `bash scripts/setup.sh` if make finds nothing to do)"
INSTALL = (f"needs Node.js >= 20 and the npm modules pinned in tests/net/js/package-lock.json: {SETUP}; it installs "
           "Node.js with apt-get if `node` is missing (and Node.js 20 from npm into tests/net/js/.node if that one "
           "is older), then runs `npm ci` in tests/net/js")


async def node_or_fail() -> str:
    """The `node` executable, if it is new enough and the modules are installed and current; else fail.

    setup.sh puts a Node.js 20 from npm in tests/net/js/.node when the system's is older: that one comes first."""
    local = sorted((JS / ".node" / "node_modules").glob("node-linux-*/bin/node"))
    node = str(local[0]) if local else shutil.which("node")
    if node is None:
        pytest.fail(f"`node` is not on PATH; this test {INSTALL}")
    version = (await trio.run_process([node, "--version"], capture_stdout=True)).stdout.decode().strip()
    if int(version.lstrip("v").split(".")[0]) < 20:  # js-libp2p needs CustomEvent and global WebCrypto
        pytest.fail(f"Node.js {version} is too old (js-libp2p needs >= 20): {SETUP}; it puts Node.js 20 from npm "
                    "in tests/net/js/.node")
    installed = JS / "node_modules" / ".package-lock.json"  # npm writes it last, on every install
    if not installed.exists() or installed.stat().st_mtime < (JS / "package-lock.json").stat().st_mtime:
        pytest.fail(f"tests/net/js/node_modules is missing or older than package-lock.json; this test {INSTALL}")
    return node


async def read_events(stdout: trio.abc.ReceiveStream, events: list[dict]) -> None:
    """Append each JSON line the js peer prints to `events`, until it closes its stdout."""
    buf = b""
    async for chunk in stdout:
        *lines, buf = (buf + chunk).split(b"\n")
        events.extend(json.loads(line) for line in lines if line.strip())


def events_of(events: list[dict], name: str) -> list[dict]:
    """The events called `name` so far; an error reported by the js peer fails the test at once."""
    for e in events:
        if e["event"] == "error":
            pytest.fail(f"js peer failed: {e['error']}")
    return [e for e in events if e["event"] == name]


async def test_js_peer_identify_ping_and_certs():
    node = await node_or_fail()
    member = Ed25519Signer(seed("interop-js"))
    topic = topic_name(NET, "certs")
    events: list[dict] = []
    with trio.fail_after(PEER_TIMEOUT + 10):
        async with hosts("interop-js") as (net,), trio.open_nursery() as nursery:
            cmd = [node, str(JS / "peer.mjs"), net.addrs()[0], topic, str(PEER_TIMEOUT)]
            proc = await nursery.start(functools.partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False))
            nursery.start_soon(read_events, proc.stdout, events)

            await wait_until(lambda: events_of(events, "subscribed"))
            (started,) = events_of(events, "started")
            js = account_id_of(ID.from_base58(started["peer"]))
            # (events_of fails the test at once if the js peer reports an error while we wait)
            await wait_until(lambda: not events_of(events, "error") and js in net.gossip.topic_peers("certs"))
            cert = make_certificate(NET, [member])
            await net.gossip.publish("certs", cert)
            await proc.wait()

    events_of(events, "error")
    assert proc.returncode == 0, events

    (ident,) = events_of(events, "identify")
    assert ident["peer"] == str(net.peer_id)
    assert deserialize_public_key(bytes.fromhex(ident["publicKey"])).to_bytes() == net.account_id
    assert envelope_protocol(NET) in ident["protocols"]
    assert "/meshsub/1.1.0" in ident["protocols"] and "/meshsub/1.2.0" not in ident["protocols"]

    pings = events_of(events, "ping")
    assert len(pings) == 3 and all(p["ms"] >= 0 for p in pings)

    (msg,) = events_of(events, "message")
    assert msg["topic"] == topic and msg["from"] == str(net.peer_id)
    assert bytes.fromhex(msg["data"]) == cert
    assert certificate_ok(NET, [member.public_key])(bytes.fromhex(msg["data"]))
    (streams,) = events_of(events, "streams")
    assert "/meshsub/1.1.0" in streams["protocols"]  # the version both sides chose
