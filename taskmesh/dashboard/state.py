"""The objects one dashboard process shares between requests. None of it is
state of the dashboard's own: the TaskManager and the raw client are
connections, the hub a fan-out of the live subscription."""

from __future__ import annotations

from dataclasses import dataclass

from ..manager import TaskManager
from .data import Reader
from .hub import EventHub


@dataclass
class Dashboard:
    tm: TaskManager
    reader: Reader
    hub: EventHub
    read_only: bool = False
