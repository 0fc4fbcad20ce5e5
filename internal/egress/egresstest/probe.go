package egresstest

// ProbePath is where tests put Probe inside a sandbox.
const ProbePath = "/tmp/probe.py"

// Probe is a Python 3 program (standard library only) that tests run
// inside real sandboxes to try the network from there. It prints what
// happened and exits 0 when the attempt worked, 1 when it did not:
//
//	probe.py http HOST PORT HOSTHEADER   GET / with that Host; prints the body
//	probe.py echo HOST PORT              a round trip through the echo server
//	probe.py resolve NAME                the addresses NAME resolves to, or the error
//	probe.py dns SERVER NAME             one raw UDP query for NAME's A records
//	                                     to SERVER:53; prints rcode and answer count
//	probe.py listen PORT FILE            accepts on 0.0.0.0:PORT for ever,
//	                                     appending a line to FILE per connection
//	probe.py conns HOST PORT N           N connections to an echo server, one
//	                                     byte each way; prints each one's time (µs)
//	probe.py bulk HOST PORT BYTES        reads BYTES from the bulk server;
//	                                     prints the bytes read and seconds taken
const Probe = `import socket, struct, sys, time, random

def fail(msg):
    print(msg)
    sys.exit(1)

def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.settimeout(10)
    return s

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "http":
            s = connect(args[0], args[1])
            s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % args[2]).encode())
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            if not data.startswith(b"HTTP/1.1 200"):
                fail("no response: %r" % data[:80])
            print(data.split(b"\r\n\r\n", 1)[1].decode().strip())
        elif cmd == "echo":
            s = connect(args[0], args[1])
            s.sendall(b"ping")
            d = s.recv(4)
            if d != b"ping":
                fail("echo: %r" % d)
            print("ok")
        elif cmd == "resolve":
            print(" ".join(sorted(socket.gethostbyname_ex(args[0])[2])))
        elif cmd == "dns":
            qid = random.randrange(65536)
            q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
            for part in args[1].rstrip(".").split("."):
                q += bytes([len(part)]) + part.encode()
            q += b"\0" + struct.pack(">HH", 1, 1)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(3)
            u.sendto(q, (args[0], 53))
            r = u.recv(4096)
            print("rcode=%d answers=%d" % (r[3] & 0xf, struct.unpack(">H", r[6:8])[0]))
        elif cmd == "listen":
            l = socket.socket()
            l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(("0.0.0.0", int(args[0])))
            l.listen(16)
            open(args[1], "a").close()
            while True:
                c, a = l.accept()
                with open(args[1], "a") as f:
                    f.write("%s\n" % (a,))
                c.close()
        elif cmd == "conns":
            out = []
            for _ in range(int(args[2])):
                t0 = time.perf_counter()
                s = connect(args[0], args[1])
                s.sendall(b"x")
                if s.recv(1) != b"x":
                    fail("echo")
                out.append(int((time.perf_counter() - t0) * 1e6))
                s.close()
            print(" ".join(map(str, out)))
        elif cmd == "bulk":
            want = int(args[2])
            t0 = time.perf_counter()
            s = connect(args[0], args[1])
            s.sendall(b"%d\n" % want)
            got = 0
            buf = bytearray(1 << 20)
            while got < want:
                n = s.recv_into(buf)
                if n == 0:
                    break
                got += n
            print("%d %.6f" % (got, time.perf_counter() - t0))
            if got != want:
                sys.exit(1)
        else:
            fail("unknown command " + cmd)
    except SystemExit:
        raise
    except Exception as e:
        fail("%s: %s" % (type(e).__name__, e))

main()
`
