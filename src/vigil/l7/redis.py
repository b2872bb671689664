"""Redis (RESP2/RESP3): the commands of a request chunk (pipelined ones
counted) and the replies of a response chunk, from the bytes captured."""
from __future__ import annotations

# the command label's values; anything else is "other"
COMMANDS = frozenset("""
APPEND AUTH BITCOUNT BLPOP BRPOP CLIENT CLUSTER COMMAND CONFIG DBSIZE DECR DECRBY DEL DISCARD
ECHO EVAL EVALSHA EXEC EXISTS EXPIRE EXPIREAT FLUSHALL FLUSHDB GET GETDEL GETEX GETSET HDEL
HELLO HEXISTS HGET HGETALL HINCRBY HKEYS HLEN HMGET HMSET HSCAN HSET HSETNX HVALS INCR INCRBY
INCRBYFLOAT INFO KEYS LINDEX LLEN LPOP LPUSH LRANGE LREM LSET LTRIM MGET MSET MULTI PEXPIRE
PERSIST PFADD PFCOUNT PING PSUBSCRIBE PTTL PUBLISH RENAME RPOP RPUSH SADD SCAN SCARD SCRIPT
SELECT SET SETEX SETNX SINTER SISMEMBER SMEMBERS SPOP SREM SSCAN STRLEN SUBSCRIBE TTL TYPE
UNLINK UNSUBSCRIBE WATCH XADD XACK XLEN XRANGE XREAD XREADGROUP ZADD ZCARD ZCOUNT ZINCRBY
ZRANGE ZRANGEBYSCORE ZRANK ZREM ZREVRANGE ZSCORE
""".split())


class _Short(Exception):
    """The captured bytes end inside a value."""


def _line(data: bytes, i: int) -> tuple:
    j = data.find(b"\r\n", i)
    if j < 0:
        raise _Short
    return data[i:j], j + 2


def commands(data: bytes) -> tuple:
    """(names, cut): the command names (upper case, "" when unreadable) of
    the RESP arrays in data, the last one counted even when data ends inside
    it; cut is True when data ended inside a command."""
    names = []
    i, n = 0, len(data)
    while i < n and data[i:i + 1] == b"*":
        name = ""
        try:
            head, i = _line(data, i + 1)
            for k in range(int(head)):
                if data[i:i + 1] != b"$":
                    raise _Short if i >= n else ValueError("not a bulk string")
                size, i = _line(data, i + 1)
                size = int(size)
                if k == 0:
                    name = data[i:i + size].decode("ascii", "replace").upper()
                if i + size + 2 > n:
                    raise _Short
                i += size + 2
        except _Short:
            names.append(name)
            return names, True
        except ValueError:
            break
        names.append(name)
    return names, False


def _value(data: bytes, i: int) -> tuple:
    """(is_error, next index) of the RESP value at i."""
    t = data[i:i + 1]
    if not t:
        raise _Short
    if t in b"+:_,#(":
        _, i = _line(data, i + 1)
        return False, i
    if t == b"-":
        _, i = _line(data, i + 1)
        return True, i
    if t in b"$=!":
        size, i = _line(data, i + 1)
        size = int(size)
        if size < 0:
            return False, i
        if i + size + 2 > len(data):
            raise _Short
        return t == b"!", i + size + 2
    if t in b"*~>%|":
        count, i = _line(data, i + 1)
        count = int(count)
        if t in b"%|":
            count *= 2
        for _ in range(max(count, 0)):
            _, i = _value(data, i)
        return False, i
    raise ValueError(t)


def replies(data: bytes) -> tuple:
    """(errors, cut): one bool per reply in data (True: an error reply), the
    last counted even when data ends inside it; cut as for commands()."""
    out = []
    i = 0
    while i < len(data):
        first = data[i:i + 1]
        try:
            err, i = _value(data, i)
        except _Short:
            out.append(first == b"-")
            return out, True
        except ValueError:
            break
        out.append(err)
    return out, False


def command_label(name: str) -> str:
    return name if name in COMMANDS else "other"
