#!/usr/bin/env python3
"""The fake model inside the guest, installed as /usr/local/lib/fondation-test/guest_fake_anthropic.py
next to fake_anthropic.py (tests/fixtures/).

Usage: guest_fake_anthropic.py ADDRESS PORT LOG KEY_FILE — serves tests/fixtures/fake_anthropic.py on
ADDRESS:PORT (a dummy interface's: the Claude gateway's upstream, which jobs cannot reach), accepting the
key of KEY_FILE (an env file; the key never goes in argv), and appends each request to LOG as a JSON
line after writing "listening".
"""

import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_anthropic import FakeAnthropic


def main() -> int:
    address, port, log_path, key_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    key = next(line.split("=", 1)[1].strip() for line in Path(key_file).read_text().splitlines()
               if line.startswith("ANTHROPIC_API_KEY="))
    with open(log_path, "a", buffering=1) as log:
        lock = threading.Lock()

        class Logged(FakeAnthropic):
            def log(self, entry: dict) -> None:
                super().log(entry)
                with lock:
                    log.write(json.dumps(entry) + "\n")

        with Logged(api_key=key, host=address, port=port):
            log.write("listening\n")
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
