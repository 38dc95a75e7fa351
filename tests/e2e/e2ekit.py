"""Shared settings of the e2e testnet (imported by conftest and the tests)."""

E2E_NODES = 5
E2E_EPOCH_MS = 20_000
JOINER_MODEL = "spec-man"
GENESIS_MODELS = ["minilm-l6", "minilm-l3", "spec-code", "spec-legal", "minilm-l6"]  # 4 nodes in space main: shards of 3 leave an expert outside
SPECIALTY = {"spec-code": "code_py", "spec-legal": "legal", "spec-man": "manpages"}

