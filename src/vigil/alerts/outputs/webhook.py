"""Alerts to an HTTP endpoint, Falcosidekick-compatible.

Each alert is POSTed as one JSON object -- Falco's JSON alert (``output``,
``priority``, ``rule``, ``time``, ``output_fields``, ``source``, ``tags``,
``hostname``), which is what Falcosidekick's ``/`` endpoint accepts.

Every payload carries the alert's stable id as ``uuid`` (as Falcosidekick
names it), the same in every delivery of it, so a receiver can de-duplicate.

With the alert store (the default), the webhook is sent from the store by
its outbox (:mod:`vigil.alerts.outbox`, :meth:`WebhookOutput.send`): one POST
per attempt, and connection errors, timeouts, HTTP 5xx, 429 and other
answers that a fixed receiver or configuration would take (401, 403, 404 ...)
are retried with exponential backoff (``backoff`` doubling up to
``max_backoff``; a ``Retry-After`` in seconds is honoured within that cap)
for as long as it takes -- ``max_retries`` does not apply, nothing is
dropped.  Only an answer that rejects the payload itself (400, 413, 415, 422)
is not retried.

Without a store, ``emit`` only puts the alert on a bounded queue and never
blocks; when the queue is full the alert is dropped and counted.  A
background thread (started with the first alert) owns a ``requests.Session``
and delivers the queue in order.  Connection errors, timeouts, HTTP 5xx and
429 are retried with the same backoff up to ``max_retries`` times; other 4xx
answers fail at once.  ``close(timeout)`` stops accepting alerts and lets the
thread deliver what is queued until ``timeout`` seconds have passed; whatever
is left after that is counted as dropped.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Optional

import requests

from vigil import __version__
from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import Output, Rejected, RetryAfter
from vigil.alerts.outputs.registry import register

log = logging.getLogger(__name__)

_STOP = object()
# answers that reject the payload itself: sending it again cannot help
PAYLOAD_REJECTED = (400, 413, 415, 422)


class WebhookOutput(Output):
    name = "webhook"
    durable = True
    inline = False          # never in the agent's thread: a POST can take seconds

    def __init__(self, url: str, headers: Optional[dict] = None, timeout: float = 5.0,
                 max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 queue_size: int = 10000, verify: object = True,
                 session: Optional[requests.Session] = None):
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"webhook url must start with http:// or https://, not {url!r}")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.url = str(url)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.queue_size = int(queue_size)
        self._session = session or requests.Session()
        self._session.headers.update({"Content-Type": "application/json",
                                      "User-Agent": f"vigil/{__version__}"})
        self._session.headers.update({str(k): str(v) for k, v in (headers or {}).items()})
        self._session.verify = verify
        self._q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self._lock = threading.Lock()
        self._stats = {"sent": 0, "retried": 0, "failed": 0, "dropped": 0}
        self._closing = threading.Event()   # no new alerts; drain until the deadline
        self._deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def outbox_key(self) -> str:
        return f"webhook:{self.url}"

    # -- from the store (the outbox) ----------------------------------------
    def send(self, alert: Alert, timeout: Optional[float] = None) -> None:
        """One POST of the alert: returns once the receiver took it, raises
        Rejected (not to be retried) or RetryAfter."""
        t = self.timeout if timeout is None else max(0.1, min(self.timeout, timeout))
        why, retry_after, retryable = self._attempt(alert.to_falco_json(), t)
        if why is None:
            self._count("sent")
            return
        if not retryable and why.startswith("HTTP ") and int(why[5:]) in PAYLOAD_REJECTED:
            self._count("failed")
            raise Rejected(f"webhook {self.url}: {why}")
        self._count("retried")
        raise RetryAfter(f"webhook {self.url}: {why}", retry_after)

    # -- producer side ------------------------------------------------------
    def emit(self, alert: Alert) -> bool:
        if self._closing.is_set():
            self._count("dropped")
            return False
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="vigil-webhook",
                                                    daemon=True)
                    self._thread.start()
        try:
            self._q.put_nowait(alert.to_falco_json(self.json_shape))
        except queue.Full:
            self._count("dropped")
            return False
        return True

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stop accepting alerts and drain the queue for at most ``timeout`` s."""
        if not self._closing.is_set():
            self._deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            self._closing.set()
            try:
                self._q.put_nowait(_STOP)
            except queue.Full:
                pass  # the worker notices _closing once the queue empties
        if self._thread is not None and self._thread.is_alive():
            # wait for the drain only: a request hanging on a dead receiver must
            # not hold up the agent's exit (the worker is a daemon thread)
            self._thread.join(None if timeout is None else max(0.0, timeout))
        if not self.alive:
            self._session.close()

    def stats(self) -> dict:
        with self._lock:
            d = dict(self._stats)
        d["queued"] = self._q.qsize()
        return d

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- worker side ----------------------------------------------------------
    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._stats[what] += n

    def _time_left(self) -> Optional[float]:
        if not self._closing.is_set() or self._deadline is None:
            return None
        return self._deadline - time.monotonic()

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            if item is _STOP:
                break
            left = self._time_left()
            if left is not None and left <= 0:
                self._count("dropped")
                continue
            try:
                self._deliver(item)
            except Exception as exc:  # never let the worker die
                self._count("failed")
                log.warning("webhook %s: unexpected error: %s", self.url, exc)
        # anything still queued after the deadline is dropped, and counted
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._count("dropped")

    def _attempt(self, payload: dict, timeout: float) -> tuple:
        """One POST: ``(None, None, True)`` when the receiver took it, else
        ``(why, retry_after, retryable)``."""
        try:
            r = self._session.post(self.url, json=payload, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # start the next attempt from fresh connections (and fresh DNS)
            self._session.close()
            return f"{type(exc).__name__}: {exc}", None, True
        except requests.RequestException as exc:   # bad URL, TLS config, ...
            return str(exc), None, False
        status = r.status_code
        r.close()
        if 200 <= status < 300:
            return None, None, True
        if status != 429 and status < 500:
            return f"HTTP {status}", None, False
        return f"HTTP {status}", _retry_after(r.headers.get("Retry-After")), True

    def _deliver(self, payload: dict) -> None:
        attempt = 0
        while True:
            left = self._time_left()
            if attempt and left is not None and left <= 0:
                self._count("failed")     # closing and out of time
                return
            timeout = self.timeout if left is None else max(0.1, min(self.timeout, left))
            why, retry_after, retryable = self._attempt(payload, timeout)
            if why is None:
                self._count("sent")
                return
            if not retryable:
                self._count("failed")
                log.warning("webhook %s: %s, not retried", self.url, why)
                return
            if attempt >= self.max_retries:
                self._count("failed")
                log.warning("webhook %s: giving up after %d attempts: %s",
                            self.url, attempt + 1, why)
                return
            delay = min(self.max_backoff, self.backoff * (2 ** attempt))
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            left = self._time_left()
            if left is not None and left < delay:
                # closing and out of time: do not retry past the deadline
                self._count("failed")
                return
            attempt += 1
            self._count("retried")
            self._sleep(delay)

    def _sleep(self, delay: float) -> None:
        end = time.monotonic() + delay
        if not self._closing.is_set():
            # wakes up early if close() is called meanwhile
            self._closing.wait(delay)
        # closing (set and never cleared, so waiting on it would return at once):
        # sleep what is left, but not past close()'s deadline
        left = end - time.monotonic()
        tl = self._time_left()
        if tl is not None:
            left = min(left, tl)
        if left > 0:
            time.sleep(left)


def _retry_after(value) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None   # HTTP-date form: fall back to our own backoff


@register("webhook", defaults={"url": None, "headers": {}, "timeout": 5.0, "max_retries": 5,
                               "backoff": 0.5, "max_backoff": 30.0, "queue_size": 10000,
                               "verify": True}, live_only=True)
def _build(s, stream) -> WebhookOutput:
    url = s.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise s.bad("url", "expected an http:// or https:// URL")
    headers = s.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in headers.items()):
        raise s.bad("headers", "expected a mapping of header name to string value")
    verify = s.get("verify")
    if not isinstance(verify, (bool, str)):
        raise s.bad("verify", "expected true, false or a CA bundle path")
    return WebhookOutput(
        url, headers=headers, timeout=s.number("timeout", 0, allow_zero=False),
        max_retries=s.int("max_retries"), backoff=s.number("backoff"),
        max_backoff=s.number("max_backoff"), queue_size=s.int("queue_size", 1), verify=verify)
