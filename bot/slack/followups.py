"""The Slack calls that follow a click, off the threads that acknowledge clicks.

A click is acknowledged and its answer stored on a listener thread; what Slack should show next
(the message redrawn, an ephemeral reply, a notice to the sender, an escalation) is a Web API call
paced at Slack's limits (`chat.update` about 50 a minute), which can wait for seconds under load.
Made on the listener thread, those waits filled the listener pool, and new clicks then waited
for a thread past Slack's 3-second ack. Here they run on a few threads of their own, in the order
they were handed in per worker, while listener threads are free again in milliseconds.

Redraws of one message are merged: when several clicks on a message are waiting, only the last
one redraws it (it reads what is stored when it runs, so it shows every answer before it).
"""

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

FOLLOWUP_THREADS = 4


class Followups:
    """Runs follow-up Slack calls on `threads` threads; `stop(timeout)` lets queued ones finish."""

    def __init__(self, threads: int = FOLLOWUP_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="hitl-followup")
        self._lock = threading.Condition()
        self._queued = 0
        self.completed = 0  # follow-ups run to their end (or their error), for tests and waits
        self._redraws: Counter[tuple[str, str]] = Counter()

    def submit(self, work: Callable[[], object], *, redraws: tuple[str, str] | None = None) -> None:
        """Run `work` later; `redraws` names the message (channel, ts) it redraws, if any."""
        with self._lock:
            self._queued += 1
            if redraws is not None:
                self._redraws[redraws] += 1
        self._pool.submit(self._run, work)

    def superseded(self, message: tuple[str, str]) -> bool:
        """Called by a follow-up about to redraw `message`: True when a later one, still
        queued, will redraw it too (so this one may skip its redraw). Counts this one done."""
        with self._lock:
            self._redraws[message] -= 1
            later = self._redraws[message] > 0
            if not later:
                del self._redraws[message]
            return later

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # a worker's boundary: the answer is stored; only the display lags
            logger.exception("a follow-up Slack call after a click failed")
        finally:
            with self._lock:
                self._queued -= 1
                self.completed += 1
                self._lock.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False if some still are after `timeout`."""
        with self._lock:
            return self._lock.wait_for(lambda: self._queued == 0, timeout)

    def stop(self, timeout: float) -> None:
        """Let queued follow-ups finish for up to `timeout` seconds, then drop the rest (the
        answers are stored; a message left undrawn is redrawn by the next click on it)."""
        if not self.wait_idle(timeout):
            logger.warning("stopping with follow-up Slack calls still queued")
        self._pool.shutdown(wait=False, cancel_futures=True)
