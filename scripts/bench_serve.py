#!/usr/bin/env python3
"""`bottleneck serve` under load, next to `bottleneck predict` on the same photos and run (issue 31).

throughput  CLIENTS concurrent clients (default 1, 4, 16), each posting one photo per request on a
            kept-alive connection to 127.0.0.1, over every photo under --photos: images/s, p50/p99
            latency, and the largest difference from `predict`'s probabilities; then `predict` on the
            same photos (its streaming images/s, model loading excluded); the server's peak RSS.
soak        --soak N requests from 8 clients mixing good photos with bad ones: 0-byte, truncated JPEG,
            not an image, a 16000x16000 PNG bomb, a 100 MiB body, slow-loris clients (headers, or the
            body, a byte at a time): every good answer equal to `predict`'s (<= 1e-5), every bad one a
            4xx with a JSON reason, the server's RSS sampled throughout, and still up at the end.
coverage    --coverage: accuracy and coverage of the validation photos at several --min-confidence
            thresholds, from `predict --json` (what serve abstains on), for each --run.
All traffic goes to 127.0.0.1, bounded in count and time.
Usage: python3 scripts/bench_serve.py --run runs/dvc --photos ../shared/data/dogs_vs_cats/validation [--soak 2000]
       python3 scripts/bench_serve.py --coverage --run runs/dvc --photos …/validation --run runs/intel --photos …
"""
import argparse
import http.client
import json
import os
import random
import select
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "bottleneck"
SEED = 31
THRESHOLDS = [0.0, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]


def photos_under(d):
    exts = {".jpg", ".jpeg", ".png"}
    return sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in exts and p.is_file())


def predict(run, photos):
    """`predict --json` of the photos: classes, probabilities by file, its stats and peak RSS."""
    cmd = [str(BIN), "--json", "-q", "predict", "--run", str(run)] + [str(p) for p in photos]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"predict failed ({proc.returncode})")
        out.seek(0)
        doc = json.load(out)
    classes = doc["classifier"]["classes"]
    probs = {Path(p["file"]).resolve(): p["probabilities"] for p in doc["predictions"]}
    stats = {k: doc[k] for k in ("images", "predicted", "seconds", "images_per_second")}
    stats["peak_rss_mib"] = usage.ru_maxrss / 1024
    return classes, probs, stats


class Server:
    def __init__(self, run, extra=()):
        self.proc = subprocess.Popen(
            [str(BIN), "-q", "serve", "--run", str(run), "--addr", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:
            if line.startswith("serving http://"):
                self.host, port = line.split()[1][len("http://"):].rstrip("/").split(":")
                self.port = int(port)
                break
        else:
            raise SystemExit("serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.rss_max = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self):
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                self.rss_max = max(self.rss_max, self.status("VmRSS:"))
            except OSError:
                return
            time.sleep(0.1)

    def conn(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def stop(self):
        peak = self.status("VmHWM:")
        self._stop.set()
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        return peak, code


def post(conn, body, name="photo.jpg", ctype="image/jpeg"):
    conn.request("POST", f"/v1/predict?name={name}", body=body, headers={"Content-Type": ctype})
    r = conn.getresponse()
    return r.status, r.read()


def max_diff(answer, classes, want):
    return max(abs(answer["probabilities"][c] - w) for c, w in zip(classes, want))


def run_clients(server, items, clients, handle):
    """`clients` threads, each on its own kept-alive connection, take the items in order and call
    handle(conn, item, lock), which returns the connection to go on with."""
    lock, nxt = threading.Lock(), [0]

    def client():
        conn = server.conn()
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items):
                break
            conn = handle(conn, items[i], lock)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def throughput(server, photos, clients, classes, expected):
    bodies = [(p, p.read_bytes()) for p in photos]
    lat, worst, errors = [], [0.0], []

    def handle(conn, item, lock):
        path, body = item
        t = time.perf_counter()
        status, data = post(conn, body, path.name)
        took = time.perf_counter() - t
        with lock:
            lat.append(took)
            if status != 200:
                errors.append((path.name, status, data[:200]))
            else:
                a = json.loads(data)["predictions"][0]
                worst[0] = max(worst[0], max_diff(a, classes, expected[path.resolve()]))
        return conn

    # Warm-up: a few requests so the first network run's set-up is not measured.
    conn = server.conn()
    for _, body in bodies[:4]:
        post(conn, body)
    conn.close()
    t0 = time.perf_counter()
    run_clients(server, bodies, clients, handle)
    wall = time.perf_counter() - t0
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
    return {"clients": clients, "images": len(bodies), "seconds": wall, "images_per_s": len(bodies) / wall,
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_abs_diff": worst[0], "errors": errors}


def png_bomb(w=16000, h=16000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def huge_post(server, size=100 << 20):
    """A 100 MiB body: the server must answer 413 without reading it all."""
    s = socket.create_connection((server.host, server.port), timeout=30)
    s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              f"Content-Length: {size}\r\n\r\n".encode())
    chunk, sent = b"\0" * (1 << 20), 0
    try:
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server answered and closed: read its answer below
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except OSError:
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
    return status, body, sent


def slow_loris(server, body_part, seconds):
    """Headers (body_part False) or a body (True) a byte every 0.5 s: the status the server answered
    with (0: it closed without one) and after how many seconds."""
    s = socket.create_connection((server.host, server.port), timeout=seconds + 40)
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    trickle = head if not body_part else b"\xff" * 1000
    if body_part:
        s.sendall(head)
    t0 = time.time()
    data = b""
    try:
        for b in trickle:
            if select.select([s], [], [], 0.5)[0] or time.time() - t0 > seconds:
                break  # the server answered or closed
            s.sendall(bytes([b]))
        data = s.recv(65536)
    except OSError:
        pass
    took = time.time() - t0
    s.close()
    status = int(data.split()[1]) if data.startswith(b"HTTP/") else 0
    return status, took


def soak(server, photos, n, classes, expected):
    rng = random.Random(SEED)
    good = [(p, p.read_bytes()) for p in photos]
    jpg = good[0][1]
    bad = {
        "empty": b"",
        "truncated": jpg[: len(jpg) // 2],
        "not an image": b"%PDF-1.4 this is not a photo\n" * 20,
        "png bomb 16000x16000": png_bomb(),
    }
    plan = []
    for i in range(n):
        if i % 5 == 4:
            kind = list(bad)[(i // 5) % len(bad)]
            plan.append(("bad", kind, bad[kind]))
        else:
            p, body = good[rng.randrange(len(good))]
            plan.append(("good", p, body))
    stats = {"good": 0, "good_ok": 0, "bad": 0, "bad_4xx_with_reason": 0, "worst_diff": 0.0, "other": []}

    def handle(conn, item, lock):
        kind, what, body = item
        try:
            status, data = post(conn, body, "soak.jpg")
        except (OSError, http.client.HTTPException) as e:
            with lock:
                stats["other"].append((kind, str(what), repr(e)))
            conn.close()
            return server.conn()
        with lock:
            if kind == "good":
                stats["good"] += 1
                if status == 200:
                    stats["good_ok"] += 1
                    a = json.loads(data)["predictions"][0]
                    stats["worst_diff"] = max(stats["worst_diff"], max_diff(a, classes, expected[what.resolve()]))
                else:
                    stats["other"].append((kind, what.name, status))
            else:
                stats["bad"] += 1
                reason = json.loads(data).get("error", "") if data.startswith(b"{") else ""
                if 400 <= status < 500 and reason:
                    stats["bad_4xx_with_reason"] += 1
                else:
                    stats["other"].append((kind, what, status))
        return conn

    loris = {}
    def run_loris(name, body_part):
        loris[name] = slow_loris(server, body_part, seconds=60)
    side = [threading.Thread(target=run_loris, args=("headers a byte at a time", False)),
            threading.Thread(target=run_loris, args=("body a byte at a time", True))]
    for t in side:
        t.start()
    huge = huge_post(server)
    t0 = time.perf_counter()
    run_clients(server, plan, 8, handle)
    stats["seconds"] = time.perf_counter() - t0
    for t in side:
        t.join()
    stats["huge_100MiB"] = {"status": huge[0], "reason": huge[1][:160].decode(errors="replace"),
                            "bytes_sent_before_answer": huge[2]}
    stats["slow_loris"] = {k: {"status": s, "seconds": round(t, 1)} for k, (s, t) in loris.items()}
    c = server.conn()
    c.request("GET", "/healthz")
    stats["healthz_after"] = c.getresponse().status
    return stats


def coverage(run, photos):
    classes, probs, _ = predict(run, photos)
    rows = []
    truth = {p.resolve(): p.parent.name for p in photos}
    for t in THRESHOLDS:
        kept = [(f, pr) for f, pr in probs.items() if max(pr) >= t]
        right = sum(classes[max(range(len(pr)), key=pr.__getitem__)] == truth[f] for f, pr in kept)
        rows.append({"min_confidence": t, "coverage": len(kept) / len(probs),
                     "accuracy_answered": right / max(1, len(kept)), "answered": len(kept)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--photos", action="append", required=True)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds of predict and the server's rows")
    ap.add_argument("--coverage", action="store_true")
    ap.add_argument("--serve-arg", action="append", default=[], help="an extra flag for serve (repeat)")
    ap.add_argument("--out", default=None, help="write the results as JSON here too")
    a = ap.parse_args()
    results = {}
    if a.coverage:
        for run, d in zip(a.run, a.photos):
            rows = coverage(run, photos_under(d))
            results[f"coverage {run}"] = rows
            print(f"\n{run} ({d})\n| --min-confidence | answered | coverage | accuracy on answered |\n|---|---|---|---|")
            for r in rows:
                print(f"| {r['min_confidence']:.2f} | {r['answered']} | {r['coverage']:.3f} | {r['accuracy_answered']:.4f} |")
    else:
        run, photos = a.run[0], photos_under(a.photos[0])
        classes, expected, stats = predict(run, photos)
        server = Server(run, ["--timeout-s", "10", *a.serve_arg])
        # Alternate predict and the server's rows, --repeat times; the medians are the numbers.
        runs, predicts = [], [stats]
        for r in range(a.repeat):
            runs.append([throughput(server, photos, int(c), classes, expected) for c in a.clients.split(",")])
            predicts.append(predict(run, photos)[2])
        med = lambda xs: sorted(xs)[len(xs) // 2]
        rows = []
        for i, c in enumerate(a.clients.split(",")):
            tries = [rs[i] for rs in runs]
            rows.append({"clients": int(c), "images": tries[0]["images"],
                         "images_per_s": med([t["images_per_s"] for t in tries]),
                         "all_images_per_s": [round(t["images_per_s"], 1) for t in tries],
                         "p50_ms": med([t["p50_ms"] for t in tries]), "p99_ms": med([t["p99_ms"] for t in tries]),
                         "max_abs_diff": max(t["max_abs_diff"] for t in tries),
                         "errors": sum(len(t["errors"]) for t in tries)})
        results["throughput"] = rows
        ips = med([p["images_per_second"] for p in predicts])
        results["predict"] = {"images_per_s": ips, "all_images_per_s": [round(p["images_per_second"], 1) for p in predicts],
                              "peak_rss_mib": max(p["peak_rss_mib"] for p in predicts)}
        if a.soak:
            results["soak"] = soak(server, photos, a.soak, classes, expected)
        peak, code = server.stop()
        results["server_peak_rss_mib"] = peak / 2**20
        results["server_exit_code"] = code
        print(f"\n| clients | images | images/s (median of {a.repeat}) | vs predict | p50 ms | p99 ms | errors | max abs diff vs predict |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['clients']} | {r['images']} | {r['images_per_s']:.1f} ({', '.join(map(str, r['all_images_per_s']))}) | "
                  f"{r['images_per_s'] / ips:.2f}× | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['max_abs_diff']:.1e} |")
        print(f"| `predict` (same photos; median of {len(predicts)}) | {len(photos)} | {ips:.1f} "
              f"({', '.join(map(str, results['predict']['all_images_per_s']))}) | 1.00× | | | | |")
        print(f"\nserver peak RSS {peak / 2**20:.0f} MiB (predict: {results['predict']['peak_rss_mib']:.0f} MiB); "
              f"exit code after SIGTERM {code}")
        if a.soak:
            print(json.dumps(results["soak"], indent=1, default=str))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
