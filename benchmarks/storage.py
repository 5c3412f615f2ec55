"""fsspec (s3fs) vs obstore on the same S3 API (moto on 127.0.0.1), the operations a store does, one run.

    python benchmarks/storage.py [--objects 200] [--size 16384] [--repeats 3]     # obstore: pip install obstore

Per library, best of ``--repeats``: PUT of ``--objects`` objects of ``--size`` bytes (a shard's manifest part
is ~20 KB), the exclusive PUT a commit marker is (If-None-Match: *, refused when the key exists), GET of
each, one LIST of the prefix. The decision this informs is in docs/architecture.md: the store uses fsspec,
because zarr-python, pyarrow and Ray all take an fsspec filesystem, so one resolved filesystem serves every
reader and writer; obstore would need a second seam for them. This measures what that costs per request.
"""
from __future__ import annotations

import argparse
import os
import time

import fsspec


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        fn(r)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=200)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port for the server, which runs in its own process (no GIL shared with us)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b", AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1")
    fs = fsspec.filesystem("s3", use_listings_cache=False)
    fs.mkdir("bench")
    data, n = os.urandom(args.size), args.objects
    rows = {}
    rows["fsspec (s3fs)"] = {
        "put": best_of(lambda r: [fs.pipe_file(f"bench/f{r}/{i}", data) for i in range(n)], args.repeats),
        "exclusive put": best_of(lambda r: [fs.pipe_file(f"bench/fx{r}/{i}", data, mode="create") for i in range(n)], args.repeats),
        "get": best_of(lambda r: [fs.cat_file(f"bench/f0/{i}") for i in range(n)], args.repeats),
        "list": best_of(lambda r: fs.ls("bench/f0", detail=False), args.repeats)}
    try:
        import obstore
        from obstore.store import S3Store

        store = S3Store("bench", endpoint=endpoint, region="us-east-1", access_key_id="b", secret_access_key="b",
                        client_options={"allow_http": True})
        rows["obstore"] = {
            "put": best_of(lambda r: [obstore.put(store, f"o{r}/{i}", data) for i in range(n)], args.repeats),
            "exclusive put": best_of(lambda r: [obstore.put(store, f"ox{r}/{i}", data, mode="create") for i in range(n)],
                                     args.repeats),
            "get": best_of(lambda r: [obstore.get(store, f"o0/{i}").bytes() for i in range(n)], args.repeats),
            "list": best_of(lambda r: list(obstore.list(store, prefix="o0")), args.repeats)}
    except ImportError:
        print("obstore is not installed: only fsspec measured")
    server.terminate()
    server.wait()
    print(f"{n} objects of {args.size} bytes on moto at {endpoint} (best of {args.repeats}); ms per request, LIST per call")
    for lib, r in rows.items():
        print(f"  {lib:14s} PUT {1e3 * r['put'] / n:6.2f}   exclusive PUT {1e3 * r['exclusive put'] / n:6.2f}   "
              f"GET {1e3 * r['get'] / n:6.2f}   LIST {1e3 * r['list']:7.1f}")


if __name__ == "__main__":
    main()
