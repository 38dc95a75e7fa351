import pytest

from moenode.node.config import Config, ConfigError, load_config, parse_config, write_default_config


def test_defaults_and_roundtrip(tmp_path):
    assert load_config(tmp_path) == Config(home=tmp_path)
    cfg = write_default_config(tmp_path, model="minilm-l3", control_port=8123, bootstrap=[
        "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc"])
    assert cfg.model == "minilm-l3" and cfg.control_port == 8123
    assert load_config(tmp_path) == cfg
    assert cfg.path("ledger") == tmp_path / "ledger.sqlite"
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("[node]\nmodle = 'x'\n", "unknown keys"),
    ("[nodes]\n", "unknown sections"),
    ("[node]\ncontrol_port = 70000\n", "control_port"),
    ("[node]\nprice_bps = 'a'\n", "price_bps must be an integer"),
    ("[node]\nbootstrap = ['/ip4/1.2.3.4/tcp/1']\n", "/p2p/"),
    ("[node]\nlog_level = 'loud'\n", "log_level"),
    ("[node\n", "not valid TOML"),
])
def test_errors_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text, tmp_path)
