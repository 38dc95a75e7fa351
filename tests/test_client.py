"""The control client is importable from anywhere: importing it loads the standard library and nothing else.

Its calls against the real control server are in tests/node/test_control_server.py, and through the CLI in
tests/cli/test_node.py and tests/e2e.
"""

import subprocess
import sys

SHOW_IMPORTS = ("import sys; before = set(sys.modules); import moenode.client; "
                "print(' '.join(sorted(set(sys.modules) - before)))")


def test_importing_the_client_loads_only_the_standard_library():
    r = subprocess.run([sys.executable, "-c", SHOW_IMPORTS], capture_output=True, text=True, timeout=60, check=True)
    loaded = r.stdout.split()
    ours = {m for m in loaded if m.split(".")[0] == "moenode"}
    others = {m.split(".")[0] for m in loaded} - {"moenode"} - set(sys.stdlib_module_names)
    assert ours == {"moenode", "moenode.client"} and not others, (ours, others)
