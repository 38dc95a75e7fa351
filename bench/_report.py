"""What every benchmark does with its result: write it as JSON, and print it as the last line with `--json`."""

import json
from pathlib import Path


def write_result(result: dict, out: str | Path, print_json: bool) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    if print_json:
        print(json.dumps(result))
