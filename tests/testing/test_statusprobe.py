"""The /status probe against a stand-in control server (the real probe process, a real HTTP server): a request
still out when a report is taken is dropped, so a node frozen by one attack is never charged to the phase before."""

import http.server
import json
import threading
import time

from moenode.testing.attacks import StatusProbe


class Slow(http.server.BaseHTTPRequestHandler):
    freeze = threading.Event()  # while set, an answer waits until it is cleared

    def do_GET(self) -> None:
        while self.freeze.is_set():
            time.sleep(0.01)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_a_request_out_across_a_report_is_dropped_not_charged_to_the_old_phase(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "node0"
    home.mkdir()
    (home / "run.json").write_text(json.dumps({"control_url": f"http://127.0.0.1:{server.server_address[1]}"}))
    (home / "control.token").write_text("t")
    try:
        with StatusProbe([home], interval=0.02) as probe:
            probe.report(next_phase="after")
            time.sleep(0.3)
            Slow.freeze.set()
            time.sleep(0.2)  # a request is now out, started under "after"
            before = probe.report(next_phase="during")
            time.sleep(0.8)
            Slow.freeze.clear()
            time.sleep(0.3)
            after = probe.report()
    finally:
        Slow.freeze.clear()
        server.shutdown()
    assert before["node0"]["after"]["answered"] >= 3
    assert before["node0"]["after"]["max_ms"] < 500
    during = after["node0"]
    assert set(during) == {"during"}, during  # the frozen request that began under "after" was dropped
    assert during["during"]["answered"] >= 3
