"""Verifies webhook events with the Standard Webhooks reference library (PyPI
`standardwebhooks`), as an integrator's receiver would: each line of the file is one request
as received, {"headers": {...}, "body": "..."}; the secret is the `whsec_` text.

Usage: verify_webhooks.py EVENTS.jsonl SECRET-FILE
Prints "OK: N events verified" and exits 0, or names the first event that does not verify.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    events_path, secret_path = sys.argv[1], sys.argv[2]
    with open(secret_path, encoding="utf-8") as f:
        webhook = Webhook(f.read().strip())
    count = 0
    with open(events_path, encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            try:
                # The library also checks that the timestamp is recent.
                webhook.verify(event["body"], event["headers"])
            except Exception as e:  # noqa: BLE001 - report any failure by event id
                print(f"FAILED: {event['headers'].get('webhook-id')}: {e}")
                return 1
            count += 1
    print(f"OK: {count} events verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
