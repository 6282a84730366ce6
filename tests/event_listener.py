"""Run as a separate process by test_events.py: subscribes to every event of a
namespace and writes each as a JSON line, until the stop file appears."""

from __future__ import annotations

import json
import os
import sys
import time

from taskmesh import subscribe


def main(url: str, namespace: str, out_path: str, stop_path: str) -> None:
    out = open(out_path, "a", buffering=1)

    def write(event):
        out.write(json.dumps({"id": event.id, "type": str(event.type),
                              "task_id": event.task_id, "data": event.data}) + "\n")

    def explode(event):
        raise RuntimeError("handler failure must not stop the listener")

    sub = subscribe(None, write, url=url, namespace=namespace)
    subscribe("TASK_COMPLETED", explode, url=url, namespace=namespace)
    print("ready", flush=True)
    deadline = time.time() + 120
    while not os.path.exists(stop_path) and time.time() < deadline:
        time.sleep(0.05)
    sub.close()
    out.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
