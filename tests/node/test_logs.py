"""The node's log: JSON lines, and an event line with its amounts for everything that moves value."""

import json
import logging

import pytest

from moenode.node.logs import JsonLines, event, log_to_file
from moenode.testing.nodekit import TEXTS, cluster, make_genesis, seed, wait_for


def test_json_lines_carry_the_message_level_and_every_extra_field(tmp_path):
    path = tmp_path / "node.log"
    log_to_file(path, "info", "json")
    try:
        log = logging.getLogger("moenode.test")
        event(log, "stake", amount=1000, account=b"\x01" * 32, epoch=3)
        log.info("plain %s", "line", extra={"peer": "ab"})
        logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")  # turned down
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "baseFilename", None) == str(path)]:
            root.removeHandler(h)
            h.close()
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(docs) == 2
    assert docs[0]["event"] == "stake" and docs[0]["amount"] == 1000 and docs[0]["account"] == "01" * 32
    assert docs[0]["level"] == "info" and docs[0]["logger"] == "moenode.test" and "stake amount=1000" in docs[0]["msg"]
    assert docs[1] == {"ts": docs[1]["ts"], "level": "info", "logger": "moenode.test", "msg": "plain line",
                       "peer": "ab"}
    assert JsonLines().format(logging.LogRecord("x", 30, "", 0, "m", None, None)).startswith("{")


@pytest.mark.slow
async def test_a_stake_a_transfer_a_win_and_its_payment_are_logged_with_their_amounts(tmp_path, caplog):
    """No log line recorded a stake, a win or a payment."""
    caplog.set_level(logging.INFO, logger="moenode")
    seeds = [seed(i, "logs") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = [c.add(s) for s in seeds]
        for m in ms:
            await c.start(m)
        await c.connected()
        n0 = ms[0].node
        await n0.payments.stake(500)
        await n0.payments.transfer(ms[1].account, 70)
        attempt, _ = await n0.submitter.submit(TEXTS, 100, 1)
        assert attempt.status == "certified", attempt

        def events() -> dict[str, list[logging.LogRecord]]:
            out: dict[str, list[logging.LogRecord]] = {}
            for r in caplog.records:
                if getattr(r, "event", None):
                    out.setdefault(r.event, []).append(r)
            return out

        await wait_for(lambda: "paid" in events(), 30)
        ev = events()
        stake = ev["stake"][0]
        assert stake.amount == 500 and stake.account == ms[0].account.hex() and stake.bonding == 500
        assert ev["transfer"][0].amount == 70 and ev["transfer"][0].to == ms[1].account.hex()
        win, paid = ev["win"][0], ev["paid"][0]
        assert win.fee == 100 and win.shard == paid.shard and paid.amount == 100
        assert isinstance(win.loss_micro, int)


def test_a_checkpoint_logs_each_strike_and_each_slash_with_its_amount(caplog):
    """No log line recorded a strike or a slash."""
    from types import SimpleNamespace

    from moenode.core.checkpoint import Checkpoint, Item
    from moenode.core.genesis import Params
    from moenode.node.epochs import Epochs

    a, b, c = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    items = tuple(sorted([Item(4, "strike", a, b"\x01" * 32, 1), Item(4, "strike", a, b"\x02" * 32, 1),
                          Item(4, "equivocation", b, b"\x03" * 32, 1), Item(4, "stake", c, b"\x04" * 32, 100)]))
    cp = Checkpoint(epoch=4, prev=b"\x00" * 32, items=items)
    caplog.set_level(logging.INFO, logger="moenode")
    Epochs(SimpleNamespace(params=Params()), None, None, None)._log_stake_changes(cp, {a: 10_000, b: 2_000, c: 50})
    ev = [(r.event, r.account, getattr(r, "amount", None), getattr(r, "kind", None)) for r in caplog.records
          if getattr(r, "event", None)]
    assert ev.count(("strike", a.hex(), None, "strike")) == 2 and ("strike", b.hex(), None, "equivocation") in ev
    assert ("slash", a.hex(), 10_000 * 20 // 10_000, None) in ev  # 2 strikes x 10 bps
    assert ("slash", b.hex(), 1_000, None) in ev  # equivocation: 50 %
    assert not any(e[1] == c.hex() for e in ev)  # a stake is not a strike
