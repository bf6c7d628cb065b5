"""Fair use of the models in a shared studio: each account's generations take turns.

An account may have ``per_user`` generations (chat replies, Prompt Lab runs) in progress at once
(``limits.generations_per_user``, default 1); more wait in that account's own first-come line, told their
place, while other accounts go on. So one person who clicks Send five times, or opens five tabs, holds
one of the server's slots, not five. The local user of a studio without accounts is not rationed.

>>> turns = Turns(per_user=1)
>>> ticket = turns.enter("ada")
>>> while not ticket.wait(1.0):      # False while an earlier generation of ada's runs
...     print(f"waiting: place {ticket.place()} in your line")
>>> try: ...                          # generate
... finally: ticket.leave()           # also when the page closes: the handler's generator is closed

Why not Gradio's own queue: its concurrency limits are per event, for everyone together, and have no
notion of who sent a request; this class is only the per-account rule on top of them.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from studio.env import LOCAL_USER
from studio.limits import current as current_limits


class Ticket:
    """One generation's place in its account's line."""

    def __init__(self, turns: Turns, user: str):
        self.turns, self.user = turns, user

    def _index(self) -> int:
        return self.turns._lines[self.user].index(self)

    def ready(self) -> bool:
        return self.user == LOCAL_USER or self._index() < self.turns.per_user

    def place(self) -> int:
        """1 for the next to go once a running generation of this account ends; 0 once it may run."""
        with self.turns._cond:
            return 0 if self.ready() else self._index() - self.turns.per_user + 1

    def wait(self, timeout: float) -> bool:
        """True once this generation may run; False if ``timeout`` seconds passed first."""
        with self.turns._cond:
            return self.turns._cond.wait_for(self.ready, timeout)

    def leave(self) -> None:
        """Done, cancelled or abandoned: the next in the line goes."""
        with self.turns._cond:
            line = self.turns._lines[self.user]
            if self in line:
                line.remove(self)
            if not line:
                del self.turns._lines[self.user]
            self.turns._cond.notify_all()


class Turns:
    def __init__(self, per_user: int | None = None):
        self.per_user = per_user or current_limits().generations_per_user
        self._cond = threading.Condition()
        self._lines: dict[str, list[Ticket]] = defaultdict(list)

    def enter(self, user: str) -> Ticket:
        ticket = Ticket(self, user)
        with self._cond:
            self._lines[user].append(ticket)
        return ticket

    def active(self) -> dict[str, int]:
        """{account: generations running or waiting}, for the admin panel."""
        with self._cond:
            return {u: len(line) for u, line in self._lines.items()}
