"""The peers' virtualenvs: made on first use, cached, one per peer.

Peers pin different redis-py versions (arq wants an older one than
taskmesh), so each gets its own virtualenv with a pinned version, built
with the ordinary ``venv`` + ``pip`` from the package index. The cache
lives in ``$TASKMESH_BENCH_VENVS`` (default ``~/.cache/taskmesh-bench``);
a venv is rebuilt when its pins change (the pins' hash names the folder).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PINS: dict[str, tuple[str, ...]] = {
    "rq": ("rq==2.12.0",),
    "arq": ("arq==0.28.0",),
    "huey": ("huey==3.5.4", "redis>=5"),
    "saq": ("saq[hiredis]==0.26.4", "typing_extensions"),
    "taskiq": ("taskiq==0.13.0", "taskiq-redis==1.2.4"),
    "dramatiq": ("dramatiq[redis]==2.2.1",),
    "celery": ("celery[redis]==5.7.0",),
    "streaq": ("streaq==7.2.0", "redis>=5"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("TASKMESH_BENCH_VENVS")
                or Path.home() / ".cache" / "taskmesh-bench")


def venv_python(peer: str) -> Path:
    pins = PINS[peer] + ("hiredis",)
    digest = hashlib.sha1(" ".join(pins).encode()).hexdigest()[:8]
    return cache_dir() / f"{peer}-{digest}" / "bin" / "python"


def ensure(peer: str, log: "callable[[str], None]" = print) -> Path | None:
    """The peer's interpreter, building its venv first if missing. None (and
    a logged reason) when the build fails, e.g. with no package index."""
    python = venv_python(peer)
    if python.exists():
        return python
    root = python.parent.parent
    log(f"building the {peer} virtualenv in {root} ({', '.join(PINS[peer])}) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS[peer], "hiredis"],
                       check=True, capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log(f"{peer}: could not build its virtualenv ({exc}); {detail.decode()[-300:]}")
        return None
    return python
