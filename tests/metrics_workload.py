"""Run in a cgroup of its own (the test's "container"): N connects to a
listener, M to a closed port, K DNS queries (dnspython) to a local server,
then BYTES sent over one TCP connection.  argv: cgroup dir, listen port,
closed port, DNS port, N, M, names (comma separated), BYTES."""
import socket
import sys

import dns.message
import dns.query

cg, port, closed, dport, n, m, qnames, nbytes = sys.argv[1:9]
with open(f"{cg}/cgroup.procs", "w") as f:
    f.write("0")
for _ in range(int(n)):
    socket.create_connection(("127.0.0.1", int(port))).close()
for _ in range(int(m)):
    try:
        socket.create_connection(("127.0.0.1", int(closed))).close()
    except ConnectionRefusedError:
        pass
for name in qnames.split(","):
    dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=int(dport), timeout=5)
s = socket.create_connection(("127.0.0.1", int(port)))
s.sendall(b"x" * int(nbytes))
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
