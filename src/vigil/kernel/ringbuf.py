"""Reading the BPF ring buffer straight from its shared memory.

The kernel maps the ring as: one writable page holding the consumer position,
then (read-only) one page holding the producer position followed by the data
area mapped twice in a row, so a record never wraps.  Each record has an
8-byte header: u32 length (bit 31 busy, bit 30 discarded) and u32 page offset;
records are 8-byte aligned.  An epoll on the map fd wakes the reader.

:class:`Rings` reads vigil's two rings (high-priority and bulk) through one
epoll, the high-priority one first, in bounded batches.
"""
from __future__ import annotations

import mmap
import select
import time

BUSY = 1 << 31
DISCARD = 1 << 30


class RingBuffer:
    """Direct mmap consumer of one BPF_MAP_TYPE_RINGBUF map."""

    def __init__(self, map_fd: int, size: int, epoll=None):
        """``epoll``: one to register with (shared with other rings, its
        owner closes it); by default the ring has its own."""
        if size & (size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = memoryview(self._prod)[page:]
        self._prod_pos = memoryview(self._prod)[:8]
        # 8-byte loads and stores: the kernel must never see half a position
        # (struct.pack_into('<Q') writes byte by byte, which it can catch mid-way
        # and take for a full ring)
        self._cons_q = memoryview(self._cons).cast("Q")
        self._prod_q = self._prod_pos.cast("Q")
        self._data_i = self._data.cast("I")     # record headers (8-byte aligned)
        self._own_ep = epoll is None
        self._ep = select.epoll() if epoll is None else epoll
        self._ep.register(map_fd, select.EPOLLIN)
        self.records = 0
        self._open = True

    def available(self) -> int:
        return self._prod_q[0] - self._cons_q[0]

    def next_ts(self) -> int | None:
        """The time (first u64) of the next committed record, or None."""
        cons, prod = self._cons_q[0], self._prod_q[0]
        if cons >= prod:
            return None
        i = (cons & self.mask) >> 2
        hdr = self._data_i[i]
        if hdr & (BUSY | DISCARD) or (hdr & ~(BUSY | DISCARD)) < 8:
            return None
        return self._data_i[i + 2] | (self._data_i[i + 3] << 32)

    def consume(self, handler, limit: int = 1 << 30, at: bool = False,
                until_ts: int | None = None) -> int:
        """Hand every ready record (a memoryview, valid only during the call)
        to handler; returns how many were read.  With at=True the handler gets
        (buffer, offset) instead, which saves a slice per record.  With
        until_ts, stop at the first record whose time (its first u64, the
        events' ev_hdr.ts) is later."""
        cons_q = self._cons_q
        prod_q = self._prod_q
        cons = cons_q[0]
        prod = prod_q[0]
        data = self._data
        hdrs = self._data_i
        mask = self.mask
        n = 0
        while cons < prod and n < limit:
            off = cons & mask
            hdr = hdrs[off >> 2]
            if hdr & BUSY:
                break
            length = hdr & ~(BUSY | DISCARD)
            if until_ts is not None and not hdr & DISCARD and length >= 8 and \
                    hdrs[(off >> 2) + 2] | (hdrs[(off >> 2) + 3] << 32) > until_ts:
                break
            if not hdr & DISCARD:
                if at:
                    handler(data, off + 8)
                else:
                    handler(data[off + 8:off + 8 + length])
            cons += (length + 15) & ~7
            n += 1
            if not n & 255:
                cons_q[0] = cons
                prod = prod_q[0]
        cons_q[0] = cons
        self.records += n
        return n

    def poll(self, handler, timeout: float = 0.1, at: bool = False) -> int:
        """Consume what is ready, else wait up to timeout seconds for more."""
        n = self.consume(handler, at=at)
        if n:
            return n
        self._ep.poll(timeout)
        return self.consume(handler, at=at)

    def fileno(self) -> int:
        return self._ep.fileno()

    def close(self) -> None:
        if self._open:
            self._open = False
            if self._own_ep:
                self._ep.close()
            self._ep = None
            self._data_i.release()
            self._cons_q.release()
            self._prod_q.release()
            self._data.release()
            self._prod_pos.release()
            self._prod.close()
            self._cons.close()


class Rings:
    """The high-priority ring and the bulk ring, read through one epoll.

    Every batch reads the high-priority ring first; each ring gives at most
    ``limit`` records a batch, so the caller gets control back (signals,
    periodic jobs) however fast the kernel writes.  Order across the rings:
    the two are merged by time -- before each high-priority record, the bulk
    records older than it -- and a batch reads bulk records only up to the
    time the high-priority ring was read to (an exec comes before the connect
    its process makes next, after the unshare it made before)."""

    def __init__(self, hi: tuple, bulk: tuple, side=()):
        """``hi``, ``bulk``: (map fd, size) of each ring.  ``side``: (map fd,
        size, handler) of rings whose records go to a handler of their own
        (the L7 chunks), read after the two, in the same batches, up to the
        same time as the bulk ring (their records begin with the time too)."""
        self._ep = select.epoll()
        self.hi = self.bulk = None
        self.side = []
        try:
            self.hi = RingBuffer(hi[0], hi[1], epoll=self._ep)
            self.bulk = RingBuffer(bulk[0], bulk[1], epoll=self._ep)
            for fd, size, handler in side:
                self.side.append((RingBuffer(fd, size, epoll=self._ep), handler))
        except BaseException:
            self.close()
            raise

    def consume(self, on_hi, on_bulk, limit: int = 1 << 30, at: bool = False) -> int:
        cut = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        hi, bulk = self.hi, self.bulk
        n_hi = n_bulk = 0
        while n_hi < limit:
            t = hi.next_ts()
            if t is not None and n_bulk < limit:
                # the bulk records older than this one go first: a process's
                # unshare before the exec that replaces it is judged as that process
                n_bulk += bulk.consume(on_bulk, limit - n_bulk, at=at, until_ts=t)
            k = hi.consume(on_hi, 1, at=at)
            if not k:
                break
            n_hi += k
        left = hi.next_ts()                # the hi ring was not read to the end
        if left is not None:
            cut = min(cut, left)
        if n_bulk < limit:
            n_bulk += bulk.consume(on_bulk, limit - n_bulk, at=at, until_ts=cut)
        n_side = 0
        left = bulk.next_ts()              # the bulk ring was not read to the cut
        if left is not None:
            cut = min(cut, left - 1)
        for ring, handler in self.side:
            # no later than the bulk ring was read to: the fork of the process an L7
            # record comes from is known before the record is
            n_side += ring.consume(handler, limit, at=at, until_ts=cut)
        return n_hi + n_bulk + n_side

    def poll(self, on_hi, on_bulk, timeout: float = 0.1, limit: int = 1 << 30,
             at: bool = False) -> int:
        """One batch of what is ready, else wait up to timeout seconds for more."""
        n = self.consume(on_hi, on_bulk, limit, at)
        if n:
            return n
        self._ep.poll(timeout)
        return self.consume(on_hi, on_bulk, limit, at)

    def available(self) -> int:
        return self.hi.available() + self.bulk.available() + sum(r.available()
                                                                 for r, _ in self.side)

    def stats(self) -> dict:
        out = {"hi": self.hi.records, "bulk": self.bulk.records}
        for i, (r, _) in enumerate(self.side):
            out[f"side{i}"] = r.records
        return out

    def close(self) -> None:
        for r in [self.hi, self.bulk] + [r for r, _ in self.side]:
            if r is not None:
                r.close()
        if self._ep is not None:
            self._ep.close()
            self._ep = None
